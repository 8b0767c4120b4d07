SHELL := /bin/bash
.DEFAULT_GOAL := test
.PHONY: deps venv lint test demo clean

PYTHON ?= python3.11
VENV := .venv
CONSTRAINTS := requirements/constraints.txt
# The stamp's name carries a hash of the install inputs: editing either file reinstalls.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | sha256sum | cut -c1-16)

# deps: the Debian packages the tests need (postgresql, redis-server, chromium, python3-venv).
# A no-op when all are installed; otherwise apt-get update + install, as root, no prompts.
deps:
	@scripts/apt-deps.sh

# venv: create .venv (or reuse it) and install the project with the dev and verl extras.
# torch goes in first, from the constraints file, so nothing later can pull a CUDA build.
venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS) | deps
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -c $(CONSTRAINTS) torch==2.13.0
	$(VENV)/bin/pip install -c $(CONSTRAINTS) -e '.[dev,verl]'
	rm -f $(VENV)/.installed-*
	touch $@

# lint: ruff (line length enforced, pyproject.toml) over the tree, and mypy --strict over the
# selection algorithms and the step record. make test runs it first.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# test: lint, then run the whole suite against real PostgreSQL and Redis. Unless DATABASE_URL and
# CELERY_BROKER_URL are given, tests/services.py starts both on 127.0.0.1 (temporary directory,
# free ports), exports their URLs to pytest and stops them after, also on failure or Ctrl-C.
# EDGEPLANE_REQUIRE_SERVICES=1 makes the tests fail rather than fall back to SQLite.
# pytest's exit 5 (no tests collected) is a failure, said aloud.
test: deps venv lint
	@EDGEPLANE_REQUIRE_SERVICES=1 $(VENV)/bin/python tests/services.py -- \
		$(VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: FAILED - pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

# demo: the embedded mode (SQLite, filesystem broker under var/): migrate, a demo team and user,
# the built-in addition task, a live run; web + worker + beat until Ctrl-C. Prints the URL.
demo: venv
	@$(VENV)/bin/python scripts/demo.py

# clean: remove the venv and generated files. Keeps var/ (the local database and queue).
clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache tests/artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
