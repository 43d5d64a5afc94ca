# Quick start: `make run` serves the API on :8000, `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

WORKERS ?= 2

.PHONY: run run-workers worker test lint audit format dashboards bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/uvicorn --factory service.main:create_app --host $(HOST) --port $(PORT)

# Several API processes: their metrics add up on their own (see README, Scaling out).
run-workers: $(BIN)/.installed
	$(BIN)/uvicorn --factory service.main:create_app --host $(HOST) --port $(PORT) \
		--workers $(WORKERS)

worker: $(BIN)/.installed
	$(BIN)/celery -A service.worker worker --loglevel=INFO

test: $(BIN)/.installed
	tools/test-services.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Known vulnerabilities in the installed dependencies (pip-audit). Fails when any dependency
# could not be audited, too (exit 3): see tools/audit.py.
audit: $(BIN)/.installed
	$(BIN)/python tools/audit.py

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

dashboards: $(BIN)/.installed
	$(BIN)/python grafana/dashboards.py

# BENCH_ARGS: e.g. --quick, --parts throughput,runner,memory,celery (see bench/README.md)
bench: $(BIN)/.installed
	tools/bench-tools.sh
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
