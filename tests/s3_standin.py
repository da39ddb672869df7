"""A local S3-compatible server for the tests of pgBackRest's object-storage repository:
moto's S3 (in memory, plain HTTP on a loopback port of its own) behind a TLS front on
loopback, which ends each connection with a proper TLS close (pgBackRest 2.45 takes the
bare EOF of werkzeug's own TLS for an error).

    python tests/s3_standin.py PORT CERT KEY     # prints "ready" once it accepts
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys

from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def serve(port: int, cert: str, key: str) -> None:
    inner_port = free_port()
    inner = ThreadedMotoServer(ip_address="127.0.0.1", port=inner_port, verbose=False)
    inner.start()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", inner_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
    print("ready", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        inner.stop()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
