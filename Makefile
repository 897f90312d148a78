# flink-tasks: one task runner. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# TEST_LANES=2 runs the suite in two lanes at once (tests/conftest.py says which and why); the
# default is one lane: on a busy 2-core machine two lanes timed out (see docs/decisions.md)
TEST_LANES ?= 0

.PHONY: install tools proto proto-check lint format typecheck test test-fast demo bench clean all

all: lint typecheck test

# Java + Maven (Debian packages) if missing, a virtualenv with every Python dependency,
# then the Maven-resolved jars of the local runtime (Kafka, StateFun on Flink).
install: $(STAMP)

$(STAMP): pyproject.toml client/pyproject.toml scripts/ensure-tools.sh Makefile
	bash scripts/ensure-tools.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=25.1"
	$(PY) -m pip install -q -e ".[worker,dev,bench]" --config-settings editable_mode=compat
	$(PY) -m pip install -q -e ./client --config-settings editable_mode=compat
	$(PY) -m flink_tasks local build
	touch $(STAMP)

proto: install
	$(PY) scripts/gen_protos.py

proto-check: install
	$(PY) scripts/gen_protos.py --check

lint: install
	$(PY) -m ruff check flink_tasks client/flink_tasks_client tests client/tests examples bench scripts
	$(PY) -m ruff format --check flink_tasks client/flink_tasks_client tests client/tests examples bench scripts

format: install
	$(PY) -m ruff format flink_tasks client/flink_tasks_client tests client/tests examples bench scripts
	$(PY) -m ruff check --fix flink_tasks client/flink_tasks_client tests client/tests examples bench scripts

typecheck: install
	$(PY) -m mypy

# The whole suite: the generated code is current, lint and types are clean, then every test:
# unit, in-process, and integration/acceptance/faults/deploy on the real local runtime
# (Kafka + StateFun started from Maven jars by the tests themselves). The 20 slowest test phases
# are listed at the end, so the CI log shows where the time goes.
test: install proto-check lint typecheck
	$(PY) -m pytest -n $(TEST_LANES) --dist loadgroup --durations=20 $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not integration" tests client/tests $(PYTEST_ARGS)

# Start Kafka + StateFun + a worker, run the example pipelines, print their results, stop.
demo: install
	$(PY) -m examples.demo

bench: install
	$(PY) -m bench.run

clean:
	$(PY) -m flink_tasks local down --purge || true
	rm -rf $(VENV) .runtime
