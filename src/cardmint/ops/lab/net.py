"""The lab's network: one namespace per host, `cmlab-hN`, joined by the bridge `cmlab-br`
through veth pairs, with addresses in 10.231.0.0/16 only (the bridge 10.231.0.1, host N
10.231.0.(10+N)). A partition takes a host's link to the bridge down; healing brings it
up. Everything is made and removed by name with `ip`; nothing here touches an interface
or namespace whose name does not start with `cmlab-`.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from cardmint import inputs
from cardmint.errors import ClusterError

PREFIX = "cmlab-"
BRIDGE = "cmlab-br"
NETWORK = "10.231.0"  # /24 of 10.231.0.0/16: the lab's only addresses
BRIDGE_ADDRESS = f"{NETWORK}.1"
MAX_HOSTS = 9


@dataclass(frozen=True)
class Host:
    """One lab host: its namespace, its address, and its link's name on each side."""

    index: int

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def netns(self) -> str:
        return f"{PREFIX}h{self.index}"

    @property
    def address(self) -> str:
        return f"{NETWORK}.{10 + self.index}"

    @property
    def link(self) -> str:
        """The veth end on the bridge (in the root namespace): down = partitioned."""
        return f"{PREFIX}h{self.index}"

    def run(self, argv: list[str]) -> list[str]:
        """`argv` inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


def hosts(count: int) -> list[Host]:
    if not 1 <= count <= MAX_HOSTS:
        raise ClusterError(f"a lab has 1 to {MAX_HOSTS} hosts, not {count}")
    return [Host(i + 1) for i in range(count)]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"ip {' '.join(args)} failed: {exc}") from exc
    if check and done.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)} exited {done.returncode}: "
                           f"{done.stderr.strip()[-300:]}")
    return done


def namespaces() -> list[str]:
    """The lab's namespaces that exist now."""
    out = ip("netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in out if line.startswith(PREFIX)]


def links() -> list[str]:
    """The lab's interfaces in the root namespace (the bridge and the veth ends)."""
    out = ip("-o", "link", "show", check=False).stdout.splitlines()
    names = [line.split(":", 2)[1].strip().split("@")[0] for line in out if ":" in line]
    return [n for n in names if n.startswith(PREFIX)]


def create(lab_hosts: list[Host]) -> None:
    """The bridge, and each host's namespace linked to it with its address."""
    if namespaces() or links():
        raise ClusterError("a lab's network (cmlab-*) exists already: `cardmint lab down` "
                           "first")
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")
    for host in lab_hosts:
        ip("netns", "add", host.netns)
        ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        ip("link", "set", host.link, "master", BRIDGE)
        ip("link", "set", host.link, "up")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")


def cut(host: Host) -> None:
    """Partition `host`: its link to the bridge goes down (nothing passes either way)."""
    ip("link", "set", host.link, "down")


def heal(host: Host) -> None:
    ip("link", "set", host.link, "up")


def is_cut(host: Host) -> bool:
    return "state DOWN" in ip("link", "show", host.link, check=False).stdout or \
        ",UP" not in ip("link", "show", host.link, check=False).stdout


def pids(netns: str) -> list[int]:
    """The processes running in a lab namespace (`ip netns pids`)."""
    out = ip("netns", "pids", netns, check=False).stdout.split()
    return [int(p) for p in out if inputs.is_digits(p)]


def remove() -> list[str]:
    """Every lab namespace and interface, by name; what was removed. The caller stops the
    processes in them first (`pids`)."""
    gone = []
    for name in namespaces():
        ip("netns", "delete", name, check=False)
        gone.append(name)
    for name in links():  # the veth ends go with their namespaces; the bridge stays
        ip("link", "delete", name, check=False)
        gone.append(name)
    return gone
