# The same targets run locally, in CI and in the README.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUNTIME_STAMP := $(VENV)/.runtime-stamp
PYTEST_ARGS ?=
# Test processes: the suite mostly waits on brokers, ptys and gateway processes, so one
# worker per core halves its time; PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= auto

.PHONY: all venv demo test check lint typecheck bench soak clean

all: check test

# The runtime alone, which is all `make demo` needs on a Pi; the development
# tools (test, lint and type-check extras) go on top of it for the other targets.
$(RUNTIME_STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The demo wants a broker to play the cloud; without one it runs offline.
demo: $(RUNTIME_STAMP)
	tools/ensure-packages mosquitto=mosquitto || echo "no mosquitto: the demo runs offline"
	$(VENV)/bin/edge-gateway demo

test: $(STAMP)
	tools/ensure-packages mosquitto=mosquitto chromium=chromium promtool=prometheus \
		systemd-analyze=systemd fusermount3=fuse3 \
		/usr/lib/postgresql/15/bin/initdb=postgresql-15
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal --cov --cov-report=term $(PYTEST_ARGS)

check: lint typecheck

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	tools/ensure-packages mosquitto=mosquitto \
		/usr/lib/postgresql/15/bin/initdb=postgresql-15 rabbitmq-server=rabbitmq-server
	$(PY) -m benchmarks

# The long fault campaign; SOAK_SECONDS, SOAK_UNPLUGS, SOAK_DAMAGES, SOAK_REPORT_DIR
# (docs/operations.md, Soak). The report lands in soak-report/.
soak: $(STAMP)
	tools/ensure-packages mosquitto=mosquitto fusermount3=fuse3 \
		/usr/lib/postgresql/15/bin/initdb=postgresql-15 rabbitmq-server=rabbitmq-server
	$(PY) -m pytest -m soak $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

# The exact versions releases install (the Ansible role's pip install -c): regenerate
# after changing dependencies, and commit constraints.txt. TARGET_PYTHON: the
# gateways' Python version (python3.11 for Debian 12).
.PHONY: constraints
constraints:
	PYTHON=$(or $(TARGET_PYTHON),python3) tools/freeze-constraints constraints.txt

# Debian bookworm arm64 under qemu-user-static: set-up, demo and the fast tests, as on a
# Pi (docs/operations.md, Before each release). Root; ARM64_CHECK_CACHE keeps the root.
.PHONY: arm64-check
arm64-check:
	tools/arm64-check
