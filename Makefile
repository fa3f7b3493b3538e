# meshwatch developer entry points. A fresh machine needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup system-deps lint notebooks-clean reliability clean

## demo: install, simulate a mesh with attacks, detect, and serve the feed on :8080
demo: setup
	$(BIN)/meshwatch demo

## test: install (incl. system packages the tests drive) and run the whole suite
test: setup system-deps
	$(BIN)/ruff check .
	$(BIN)/pytest

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meshwatch needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## system-deps: Debian packages the tests use for real (browser, Alertmanager)
system-deps:
	scripts/install-system-deps.sh

lint: setup
	$(BIN)/ruff check .

## reliability: run the fault suite (tests/faults) and rewrite the table in docs/reliability.md
reliability: setup system-deps
	$(BIN)/python scripts/reliability.py

## notebooks-clean: strip outputs before committing notebooks (the tests check they are clean)
notebooks-clean: setup
	$(BIN)/python scripts/strip_notebooks.py

clean:
	rm -rf $(VENV) meshwatch-data meshwatch-demo .pytest_cache
