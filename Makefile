# The same targets run locally, in CI and in the README.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all venv demo test check lint typecheck bench soak clean

all: check test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The demo wants a broker to play the cloud; without one it runs offline.
demo: $(STAMP)
	tools/ensure-packages mosquitto=mosquitto || echo "no mosquitto: the demo runs offline"
	$(VENV)/bin/edge-gateway demo

test: $(STAMP)
	tools/ensure-packages mosquitto=mosquitto chromium=chromium promtool=prometheus \
		systemd-analyze=systemd fusermount3=fuse3
	$(PY) -m pytest $(PYTEST_ARGS)

check: lint typecheck

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	tools/ensure-packages mosquitto=mosquitto
	$(PY) -m benchmarks

soak: $(STAMP)
	tools/ensure-packages mosquitto=mosquitto fusermount3=fuse3
	$(PY) -m pytest -m soak $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
