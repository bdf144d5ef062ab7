# Two commands for a newcomer on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test test-fast test-floors chaos lint typecheck proto bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.run-installed

## run: create .venv, install, start a node on the embedded SQLite default (ARGS="--name n1 --no-ui")
run: $(VENV)/.run-installed
	$(BIN)/mesh-tui $(ARGS)

## test: create .venv with the test extra and run the whole suite: the tests not marked slow (and the slow ones marked
## untimed, whose checks hold on a loaded machine) on two workers, then the other slow multi-process cluster and chaos
## tests one at a time (their failure-detection timings are judged on an unloaded machine).
## Exit status 5 (nothing selected, e.g. ARGS=tests/unit for the slow half) is not a failure.
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

test: $(VENV)/.test-installed
	$(BIN)/ruff check mesh_core mesh_tui mesh_testing tests bench
	$(BIN)/python -m mypy
	$(PYTEST) -n 2 --dist loadgroup -m "not slow or untimed" --durations=15 $(ARGS) || [ $$? -eq 5 ]
	$(PYTEST) -m "slow and not untimed" --durations=25 $(ARGS) || [ $$? -eq 5 ]
	$(if $(ARGS),,$(MAKE) --no-print-directory test-floors)

## test-floors: the Redis backend's tests and the cockpit's (its snapshots aside: they are drawn by one version) again
## with redis-py, textual and rich at the lowest versions pyproject.toml allows, on the newest Python 3.12+ found here
## (FLOOR_PYTHON; else $(PYTHON)), in a venv of their own (.venv-floors); `make test` runs it last (without ARGS).
## The floors are what these pass on: redis-py's asyncio cluster has pipeline transactions from 6.2, and the cockpit
## needs textual 6. The newer Python found that its StreamWriter.writelines ignores flow control (backends/redis/prompt.py).
floor = $(shell sed -n 's/^ *"$(1)>=\([0-9.]*\)",.*/\1/p' pyproject.toml | head -n 1)
FLOORS = redis==$(call floor,redis) textual==$(call floor,textual) rich==$(call floor,rich)
FLOOR_VENV := .venv-floors
FLOOR_PYTEST := $(FLOOR_VENV)/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup
NEWEST_PYTHON := $(lastword $(sort $(wildcard /usr/bin/python3.1[2-9] /usr/local/bin/python3.1[2-9] \
	$(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3.1[2-9])))
FLOOR_PYTHON ?= $(or $(NEWEST_PYTHON),$(PYTHON))

$(FLOOR_VENV)/.installed: pyproject.toml
	$(FLOOR_PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --quiet -e '.[test]' $(FLOORS)
	touch $@

test-floors: $(FLOOR_VENV)/.installed
	$(FLOOR_PYTEST) -m "not slow or untimed" -k redis tests/backends
	$(FLOOR_PYTEST) tests/tui/test_pilot.py tests/tui/test_pure.py tests/tui/test_errors.py

## test-fast: everything but the slow multi-process tests, on two workers
test-fast: $(VENV)/.test-installed
	$(PYTEST) -n 2 --dist loadgroup -m "not slow" $(ARGS)

## chaos: the long chaos suite (1,000 tasks a nemesis, 10,000 fuzzed entries, a 10 s partition, 20 s of loss);
## `make test` runs its short version. Network namespaces, tmpfs and faketime need root (skipped otherwise).
chaos: $(VENV)/.test-installed
	CHAOS_SCALE=long $(BIN)/python -m pytest -q -p no:cacheprovider -m chaos tests/chaos $(ARGS)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check mesh_core mesh_tui mesh_testing tests bench

## typecheck: mypy on the packages listed in pyproject.toml [tool.mypy] (mesh_core and mesh_tui)
typecheck: $(VENV)/.test-installed
	$(BIN)/python -m mypy

## proto: regenerate mesh_core/backends/grpc/_generated/ from proto/mesh.proto (commit the result with the .proto)
proto: $(VENV)/.test-installed
	$(BIN)/python -m mesh_core.backends.grpc.gen

## bench: end-to-end benchmarks; a table on stdout, JSON in bench/results/
bench: $(VENV)/.test-installed
	$(BIN)/python -m bench $(ARGS)
	$(BIN)/python -m bench.tui

## screenshots: start a seeded demo mesh and save SVGs of the cockpit into screenshots/
screenshots: $(VENV)/.test-installed
	$(BIN)/python -m mesh_tui.screenshots --out screenshots

clean:
	rm -rf $(VENV) .mesh .pytest_cache .hypothesis *.egg-info
