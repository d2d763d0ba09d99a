# Every target works from a fresh clone: it creates .venv on first use and reuses it after.
PY := .venv/bin/python
OUT ?= figures

.PHONY: setup test lint typecheck unit integration notebooks reproduce bench clean

setup:
	@scripts/setup.sh

lint: setup
	$(PY) -m ruff check sinklens tests benchmarks
	$(PY) -m ruff format --check sinklens tests benchmarks

typecheck: setup
	$(PY) -m mypy

# The full suite: lint, types, then the unit, integration and notebook tiers.
test: lint typecheck
	$(PY) -m pytest -n 2 --dist loadgroup tests

unit: setup
	$(PY) -m pytest -n 2 tests/unit

integration: setup
	$(PY) -m pytest -n 2 tests/integration

notebooks: setup
	$(PY) -m pytest tests/notebooks

# The package's main job on the shipped model organism.
reproduce: setup
	.venv/bin/sinklens reproduce --out $(OUT)

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
