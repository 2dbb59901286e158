# Coffer: `make run` starts the platform, `make test` runs the test suite.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck check up down bench clean

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==24.3.1"
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/run_platform.py

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy shared services cli

check: lint typecheck test

# Coffer against restic on a real tree, local and S3 stores (docs/benchmarks.md);
# BENCH_ARGS=--quick for a ~100 MB run. Then the PostgreSQL case against pg_dump
# (docs/benchmarks-postgres.md); BENCH_ARGS="--only postgres" runs it alone.
bench: $(STAMP)
	$(BIN)/python -m bench.run_bench $(BENCH_ARGS)

up:
	docker compose up -d --build --wait

down:
	docker compose down

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
