SHELL := /bin/bash
.DEFAULT_GOAL := test
.PHONY: deps venv venv-base lint test demo clean

PYTHON ?= python3.11
VENV := .venv
CONSTRAINTS := requirements/constraints.txt
# The stamps' names carry a hash of the install inputs: editing either file reinstalls. Two
# stamps: the base install (what `make demo` needs) and the full one (dev and verl extras, what
# `make test` needs). The full install includes the base, so a demo after a test installs
# nothing, and a test after a demo adds only the extras.
INPUTS_HASH := $(shell cat pyproject.toml $(CONSTRAINTS) | sha256sum | cut -c1-16)
BASE_STAMP := $(VENV)/.installed-base-$(INPUTS_HASH)
FULL_STAMP := $(VENV)/.installed-full-$(INPUTS_HASH)

# deps: the Debian packages the tests need (postgresql, redis-server, chromium, caddy,
# python3-venv). A no-op when all are installed; otherwise apt-get update + install, as root,
# no prompts. `make demo` never runs it: the demo needs none of them.
deps:
	@scripts/apt-deps.sh

# venv: create .venv (or reuse it) and install the project with the dev and verl extras.
# torch goes in first, from the constraints file, so nothing later can pull a CUDA build.
venv: $(FULL_STAMP)

# venv-base: .venv with the project's own dependencies only (no dev, no verl): the demo's.
venv-base: $(BASE_STAMP)

# Python 3.11 with its venv module; when it is missing, what to install is said aloud.
define make_venv
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV) || { \
		echo "make: '$(PYTHON) -m venv $(VENV)' failed (above: why). It needs Python 3.11 with its" \
			"venv module (ensurepip): on Debian or Ubuntu, as root, apt-get install python3.11-venv;" \
			"or give another Python 3.11: make $(MAKECMDGOALS) PYTHON=/path/to/python3.11" >&2; \
		rm -rf $(VENV); exit 1; }
endef

$(BASE_STAMP): pyproject.toml $(CONSTRAINTS)
	@if [ -e $(FULL_STAMP) ]; then touch $@; exit 0; fi; \
	set -e; $(make_venv); \
	$(VENV)/bin/pip install -c $(CONSTRAINTS) torch==2.13.0; \
	$(VENV)/bin/pip install -c $(CONSTRAINTS) -e .; \
	rm -f $(VENV)/.installed-*; \
	touch $@

$(FULL_STAMP): pyproject.toml $(CONSTRAINTS) | deps
	$(make_venv)
	$(VENV)/bin/pip install -c $(CONSTRAINTS) torch==2.13.0
	$(VENV)/bin/pip install -c $(CONSTRAINTS) -e '.[dev,verl]'
	rm -f $(VENV)/.installed-*
	touch $@ $(BASE_STAMP)

# lint: ruff (line length enforced, pyproject.toml) over the tree, and mypy --strict over the
# selection algorithms and the step record. make test runs it first.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# test: lint, then run the whole suite against real PostgreSQL and Redis. Unless DATABASE_URL and
# CELERY_BROKER_URL are given, tests/services.py starts both on 127.0.0.1 (temporary directory,
# free ports), exports their URLs to pytest and stops them after, also on failure or Ctrl-C.
# EDGEPLANE_REQUIRE_SERVICES=1 makes the tests fail rather than fall back to SQLite.
# The whole suite runs as two lanes at once (tests/lanes.py: the verl tests wait on Ray and their
# jobs far more than they compute); PYTEST_ARGS runs one pytest over what it names instead.
# pytest's exit 5 (no tests collected) is a failure, said aloud.
PYTEST_RUN = $(if $(PYTEST_ARGS),-m pytest -p no:cacheprovider $(PYTEST_ARGS),tests/lanes.py)
test: deps venv lint
	@EDGEPLANE_REQUIRE_SERVICES=1 $(VENV)/bin/python tests/services.py -- \
		$(VENV)/bin/python $(PYTEST_RUN); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: FAILED - pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

# demo: the embedded mode (SQLite, filesystem broker under var/): migrate, a demo team and user,
# the built-in addition task, a live run; web + workers + beat until Ctrl-C. Prints the URL.
# Installs only the project's own dependencies (venv-base): no test tools, no verl, no apt.
demo: venv-base
	@$(VENV)/bin/python scripts/demo.py

# clean: remove the venv and generated files. Keeps var/ (the local database and queue).
clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache tests/artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
