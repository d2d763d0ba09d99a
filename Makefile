# Every target works from a fresh clone: it creates .venv on first use and reuses it after.
PY := .venv/bin/python
# reproduce writes to an untracked folder; `make figures` refreshes the committed figures/.
OUT ?= build/figures

.PHONY: setup figures test test-latest lock lint typecheck unit integration notebooks acceptance reproduce bench clean

setup:
	@scripts/setup.sh

lint: setup
	$(PY) -m ruff check sinklens tests benchmarks
	$(PY) -m ruff format --check sinklens tests benchmarks

typecheck: setup
	$(PY) -m mypy

# The full suite: lint, types, then the unit, integration, acceptance and notebook tiers.
test: lint typecheck
	$(PY) -m pytest -n 2 --dist loadgroup tests

# The suite against the newest versions pyproject.toml allows, in .venv-latest (the lock
# and .venv are left alone). Green here, `make lock` moves the lock to those versions.
test-latest:
	@scripts/setup.sh --latest
	.venv-latest/bin/pip freeze --all --disable-pip-version-check | diff requirements.lock - | grep '^[<>]' || true
	.venv-latest/bin/python -m ruff check sinklens tests benchmarks
	.venv-latest/bin/python -m mypy
	.venv-latest/bin/python -m pytest -n 2 --dist loadgroup tests

# Rewrite requirements.lock from .venv-latest (after a green `make test-latest`).
lock:
	@test -x .venv-latest/bin/python || { echo "lock: run make test-latest first"; exit 1; }
	{ sed -n '/^#/p' requirements.lock; .venv-latest/bin/pip freeze --all --disable-pip-version-check \
	  | grep -v '^-e\|^sinklens\|^wheel==' | sed 's/^\(torch==[^+]*\)+.*/\1/' | LC_ALL=C sort -f; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

unit: setup
	$(PY) -m pytest -n 2 tests/unit

integration: setup
	$(PY) -m pytest -n 2 tests/integration

# A real pretrained LLM (SmolLM2-135M, fetched on first use) through every back end.
acceptance: setup
	$(PY) -m pytest -n 2 --dist loadgroup tests/acceptance

notebooks: setup
	$(PY) -m pytest tests/notebooks

# The package's main job on the shipped model organism.
reproduce: setup
	.venv/bin/sinklens reproduce --out $(OUT) --overwrite

# The committed figures are made with the kernels every x86-64 CPU can run (ATen without
# vector extensions, MKL's compatible branch): NPO training magnifies last-bit kernel
# differences into another model, so these pins make figures/ comparable across machines
# (docs/determinism.md). Training takes about 2.5 times as long. The cache is a separate
# one, since zoo members trained with the native kernels are not the same models.
PORTABLE_KERNELS := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE
PORTABLE_CACHE := $${SINKLENS_CACHE:-$$HOME/.cache/sinklens}/portable-kernels

figures: setup
	$(PORTABLE_KERNELS) SINKLENS_CACHE=$(PORTABLE_CACHE) OMP_NUM_THREADS=1 \
	  .venv/bin/sinklens reproduce --out figures --overwrite

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf .venv .venv-latest .pytest_cache .mypy_cache .ruff_cache
