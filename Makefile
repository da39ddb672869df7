# CardMint: `make run` serves the API on a local primary + replica cluster; `make test`
# runs the suite against real PostgreSQL. Both set up everything they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run PORT=8080` (HOST= another loopback address): where the API listens
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run port-free test venv postgres pgbouncer patroni browser promtool fonts pgbackrest lint bench down clean

# The port is checked first: a taken one fails in a second, not after the whole set-up.
run: port-free venv postgres pgbouncer patroni pgbackrest
	$(BIN)/cardmint cluster up
	$(BIN)/cardmint db upgrade
	$(BIN)/cardmint catalog load
	$(BIN)/cardmint serve --host $(HOST) --port $(PORT)

port-free:
	@$(PYTHON) -c 'import socket, sys; s = socket.socket(); \
	s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
	exec("try: s.bind((sys.argv[1], int(sys.argv[2])))\nexcept OSError as e: " \
	"sys.exit(f\"make run: cannot listen on {sys.argv[1]}:{sys.argv[2]} ({e.strerror}); " \
	"choose another: make run PORT=8001\")")' '$(HOST)' '$(PORT)'

# The contracts (lint) first: a broken one fails at once, before any setup or test.
test: lint postgres pgbouncer patroni pgbackrest browser promtool fonts
	$(BIN)/pytest

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "CardMint needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1)." \
	         "Set PYTHON=/path/to/python3.11."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	  --constraint constraints.txt --editable '.[dev]'
	touch $@

# PostgreSQL's server programs (initdb, postgres, pg_basebackup, psql) for the local
# cluster; installed from Debian's packages when missing and we may, else a clear stop.
postgres: venv
	@$(BIN)/python -c 'from cardmint.cluster.pg import pgbin; pgbin.find()' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing PostgreSQL server binaries (Debian package postgresql-15)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      postgresql-15 postgresql-contrib >/dev/null || \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  fi; \
	  $(BIN)/python -c 'from cardmint.cluster.pg import pgbin; pgbin.find()' || { \
	    echo "Missing: PostgreSQL >= 15 server binaries (initdb, postgres, pg_basebackup," \
	         "psql). Install them (Debian: apt-get install postgresql-15) or set" \
	         "CARDMINT_PG_BINDIR to their directory."; exit 1; }; }

# pgBackRest (Debian's package, 2.45) is the engine of `cardmint backup` and of WAL
# archiving (archive-push / archive-get); installed when missing and we may, else a clear stop.
pgbackrest:
	@command -v pgbackrest >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing pgBackRest (Debian package pgbackrest)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      pgbackrest >/dev/null; \
	  fi; \
	  command -v pgbackrest >/dev/null || { echo "Missing: pgBackRest (Debian: apt-get" \
	    "install pgbackrest), the engine of backups and WAL archiving."; exit 1; }; }

# PgBouncer (Debian's package) for `cardmint pooler`; its tests are skipped without it.
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing PgBouncer (Debian package pgbouncer)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      pgbouncer >/dev/null; \
	  fi; \
	  command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || echo "PgBouncer is" \
	    "missing: \`cardmint pooler\` and its tests are skipped (Debian: apt-get install" \
	    "pgbouncer)"; }

# The Patroni engine (`cluster up --engine patroni`): Patroni in its own venv made from
# the system Python (it runs as the postgres OS user, which cannot read every Python),
# and etcd, its DCS, from Debian's etcd-server; installed when missing and we may.
PATRONI_VENV := .venv-patroni
PATRONI_STAMP := $(PATRONI_VENV)/.installed
SYSTEM_PYTHON ?= /usr/bin/python3

patroni: $(PATRONI_STAMP)
	@command -v etcd >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing etcd (Debian package etcd-server)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      etcd-server >/dev/null; \
	  fi; \
	  command -v etcd >/dev/null || echo "etcd is missing: the Patroni engine cannot run and" \
	    "its tests are skipped (Debian: apt-get install etcd-server, or set CARDMINT_ETCD)"; }

$(PATRONI_STAMP): requirements-patroni.txt
	@test -x $(SYSTEM_PYTHON) || { echo "The Patroni engine needs $(SYSTEM_PYTHON) (a Python" \
	  "the postgres OS user can read): set SYSTEM_PYTHON=/path/to/python3"; exit 1; }
	@test -x $(PATRONI_VENV)/bin/pip || { rm -rf $(PATRONI_VENV); \
	  $(SYSTEM_PYTHON) -m venv $(PATRONI_VENV) >/dev/null 2>&1 || { rm -rf $(PATRONI_VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "installing python3-venv (Debian package)"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        python3-venv >/dev/null; \
	    fi; \
	    $(SYSTEM_PYTHON) -m venv $(PATRONI_VENV); } || { \
	  echo "Cannot make $(PATRONI_VENV) (Debian: apt-get install python3-venv)"; exit 1; }; }
	$(PATRONI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  --requirement requirements-patroni.txt
	touch $@

# Debian's chromium for the browser tests (Playwright drives it; its own browser download
# is never used). Without it those tests are skipped with the reason.
browser:
	@test -x /usr/bin/chromium || command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (Debian package chromium) for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium >/dev/null; \
	  fi; \
	  test -x /usr/bin/chromium || command -v chromium >/dev/null || echo "chromium is" \
	    "missing: the browser tests (tests/test_web_*browser.py) are skipped (Debian:" \
	    "apt-get install chromium)"; }

# promtool, from Debian's prometheus package, checks /metrics and the exported alert rules
# (tests/test_prometheus.py). The package is unpacked, not installed: installing it would
# also set up a Prometheus server (and, with its recommends, node-exporter) that a
# systemd host starts listening on every interface. The tests skip without it.
PROMTOOL := $(BIN)/promtool

promtool: venv
	@command -v promtool >/dev/null || test -x $(PROMTOOL) || { \
	  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then \
	    echo "unpacking promtool from Debian's prometheus package into $(PROMTOOL)"; \
	    tmp=$$(mktemp -d) && chmod 755 $$tmp && \
	    { (cd $$tmp && apt-get download -qq prometheus 2>/dev/null) || \
	      { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	        (cd $$tmp && apt-get download -qq prometheus 2>/dev/null); }; } && \
	    dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/x && \
	    install -m 755 $$tmp/x/usr/bin/promtool $(PROMTOOL); \
	    rm -rf $$tmp; \
	  fi; \
	  command -v promtool >/dev/null || test -x $(PROMTOOL) || echo "promtool is missing:" \
	    "tests/test_prometheus.py's promtool checks are skipped (Debian: apt-get install" \
	    "prometheus)"; }

# Debian's DejaVu and Liberation fonts: the synthetic card photos of the scan tests and
# bench/scan.py are rendered in them. Without them those tests are skipped with the reason.
FONT_FILES := /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf \
  /usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf
fonts:
	@ls $(FONT_FILES) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing fonts (Debian packages fonts-dejavu-core, fonts-liberation)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      fonts-dejavu-core fonts-liberation >/dev/null; \
	  fi; \
	  ls $(FONT_FILES) >/dev/null 2>&1 || echo "fonts are missing: the tests on rendered" \
	    "card photos are skipped (Debian: apt-get install fonts-dejavu-core fonts-liberation)"; }

# Style, layering (import-linter) and types (mypy): their settings are in pyproject.toml.
lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy

# wrk (Debian's package) is the reference the load tests hold their generator to.
bench: venv postgres
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing wrk (Debian package wrk)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  fi; \
	  command -v wrk >/dev/null || echo "wrk is missing: the generator check is skipped" \
	    "(Debian: apt-get install wrk)"; }
	$(BIN)/python -m bench.foundation
	$(BIN)/python -m bench.loadtest

down: venv
	$(BIN)/cardmint cluster down

clean: down
	rm -rf $(VENV) $(PATRONI_VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
