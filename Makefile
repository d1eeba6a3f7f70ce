# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GEN_STAMP := vitrine/v1/.generated
DATA_DIR ?= ./data
# Test workers (pytest-xdist): three on two cores keep both busy, since many tests wait on
# subprocesses, fsyncs and live feeds (the whole suite: ~11-15 min instead of ~25 in one process).
TEST_WORKERS ?= 3
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

.PHONY: run test test-fast test-slow gen lint bench loadtest evaluate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(GEN_STAMP): $(STAMP) $(PROTOS) tools/gen_protos.py
	$(PY) tools/gen_protos.py
	touch $(GEN_STAMP)

gen: $(GEN_STAMP)

## Start the whole suite on localhost with the demo store (Ctrl-C stops it).
run: $(GEN_STAMP)
	$(VENV)/bin/vitrine up --data-dir $(DATA_DIR)

## Lint (ruff), type-check (mypy: [tool.mypy] in pyproject.toml), then every test including the slow set.
test: $(GEN_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PYTEST)

## Quick loop while developing: skips the slow set.
test-fast: $(GEN_STAMP)
	$(PYTEST) -m "not slow"

test-slow: $(GEN_STAMP)
	$(PYTEST) -m slow

lint: $(GEN_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## Scoring-core micro-benchmarks (pytest-benchmark); figures in benchmarks/README.md.
bench: $(GEN_STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only

loadtest: $(GEN_STAMP)
	$(VENV)/bin/vitrine loadtest

evaluate: $(GEN_STAMP)
	$(VENV)/bin/vitrine evaluate

clean:
	rm -rf $(VENV) build *.egg-info $(GEN_STAMP) vitrine/v1/*_pb2*.py vitrine/v1/*_pb2*.pyi
