# The two commands a new machine needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test setup setup-test bench clean check-arm64

run: setup
	$(VENV)/bin/edge-runtime run

test: setup-test
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.installed-run
setup-test: $(VENV)/.installed-test

$(VENV)/bin/python:
	./scripts/sysdeps.sh run
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-run: setup.cfg pyproject.toml scripts/sysdeps.sh | $(VENV)/bin/python
	./scripts/sysdeps.sh run
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml scripts/sysdeps.sh | $(VENV)/bin/python
	./scripts/sysdeps.sh test
	$(PY) -m pip install -q -e '.[test,quantize]'
	touch $@ $(VENV)/.installed-run

# Installed and run on arm64 under qemu, compared with this machine (root; see scripts/check_arm64.sh).
check-arm64: setup-test
	./scripts/sysdeps.sh arm64
	./scripts/check_arm64.sh

bench: setup-test
	$(VENV)/bin/edge-runtime bench decode

clean:
	rm -rf $(VENV) build *.egg-info bench-out .pytest_cache
