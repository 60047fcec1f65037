# Two commands for a fresh machine; each creates the virtual environment it needs (.venv) on first use.
#   make run    the main job: MPL on two moons, CPU (any mpl-run overrides via ARGS="...")
#   make test   the default test suite (slow tests are skipped; `make test-all` runs them too)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test test-all ablation ablation-toy bench clean

run: $(VENV)/.installed
	$(BIN)/mpl-run $(ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(ARGS)

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest -m "slow or not slow" $(ARGS)

ablation: $(VENV)/.installed
	$(BIN)/python scripts/ablation.py $(ARGS)

ablation-toy: $(VENV)/.installed  # the toy's untried settings (issue 20): docs/ablation_toy.{md,json,png}, _boundaries.png
	$(BIN)/python scripts/ablation.py --benchmarks paper_toy_open $(ARGS)

bench: $(VENV)/.installed
	$(BIN)/python scripts/bench_two_moons.py $(ARGS)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[test]"
	$(BIN)/python -m pip uninstall -y -q hydra-optuna-sweeper 2>/dev/null || true  # (superseded by mpl_runner/search.py)
	touch $@

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
