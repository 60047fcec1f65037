# Two commands for a fresh machine; each creates the virtual environment it needs (.venv) on first use.
#   make run    the main job: MPL on two moons, CPU (any mpl-run overrides via ARGS="...")
#   make test   the default test suite (slow tests are skipped; `make test-all` runs them too)
#   make gpu-wheels   fills .whl/ for scripts/gpu_check.sh (a GPU machine with PyTorch but no Hydra, no index)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test test-all ablation ablation-toy bench gpu-wheels clean

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

# What a GPU machine with PyTorch, TensorBoard, scikit-learn, matplotlib and pytest lacks to run mpl-runner: Hydra,
# OmegaConf, Optuna, safetensors, timm and their dependencies, at the versions .venv runs (setuptools: to install the project there),
# as wheels for CPython $(GPU_PYTHON) on x86-64 Linux (about 5 MB). scripts/gpu_check.sh installs those its Python
# lacks. SQLAlchemy's pure-Python wheel (its C speed-ups are optional); antlr4 4.9.3 has no wheel on the index.
GPU_PYTHON ?= 3.12
GPU_WHEELS := hydra-core omegaconf optuna alembic colorlog Mako MarkupSafe PyYAML packaging tqdm typing_extensions \
	safetensors timm
WHEEL_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

gpu-wheels: $(VENV)/.installed
	rm -rf .whl && mkdir .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		$(WHEEL_PLATFORMS) -d .whl "setuptools>=70.1,<81" \
		$$(for p in $(GPU_WHEELS); do echo "$$p==$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('$$p'))")"; done)
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation py \
		--platform any -d .whl "SQLAlchemy==$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('SQLAlchemy'))")"
	$(BIN)/python -m pip wheel -q --no-deps -w .whl \
		"antlr4-python3-runtime==$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('antlr4-python3-runtime'))")"
	du -sh .whl && ls .whl

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[test]"
	# (hydra-optuna-sweeper is superseded by mpl_runner/search/optuna.py)
	$(BIN)/python -m pip uninstall -y -q hydra-optuna-sweeper 2>/dev/null || true
	touch $@

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
