# `make test` and `make demo` bootstrap .venv from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

FLOWER_VENV := .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed

.PHONY: test lint typecheck pytest demo bench bench-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers by default (CI has 2 cores); tests marked `serial` run afterwards on their own,
# because another worker's load would change what they measure. PYTEST_WORKERS=0: one process.
# Whole files go to a worker in collection order, the longest first (tests/conftest.py
# LONGEST_FIRST), so no long file runs alone at the end.
PYTEST_WORKERS ?= 2

pytest: $(STAMP)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not serial" --durations=25
	$(BIN)/pytest -q -m serial --durations=5

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/modelfleet demo

# Flower (the federated-learning peer) pins versions that clash with ours: its own venv,
# with modelfleet importable for the shared data split and trainer.
$(FLOWER_STAMP):
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/pip install --quiet 'flwr[simulation]>=1.42' scikit-learn onnx pydantic pydantic-settings
	$(FLOWER_VENV)/bin/pip install --quiet --no-deps -e .
	touch $(FLOWER_STAMP)

# wrk drives the serving benchmark (Debian package); MLServer gets its own venv (bench/serve.py).
bench-tools:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)

bench: $(STAMP) $(FLOWER_STAMP) bench-tools
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/telemetry_overhead.py
	$(BIN)/python bench/geo.py
	$(BIN)/python bench/gateway_clients.py
	FLOWER_PYTHON=$(CURDIR)/$(FLOWER_VENV)/bin/python $(BIN)/python bench/federated.py

clean:
	rm -rf $(VENV) $(FLOWER_VENV) .venv-mlserver .mypy_cache .pytest_cache .ruff_cache
