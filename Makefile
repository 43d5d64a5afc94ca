# Quick start: `make run` serves the API on :8000, `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run worker test lint format dashboards bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/uvicorn --factory service.main:create_app --host $(HOST) --port $(PORT)

worker: $(BIN)/.installed
	$(BIN)/celery -A service.worker worker --loglevel=INFO

test: $(BIN)/.installed
	tools/test-services.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

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
