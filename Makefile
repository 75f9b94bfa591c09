# Quickstart targets: `make run` (the main job) and `make test` (the suite). Both create .venv if
# missing and install what they need. torch is installed first, pinned, because an unpinned torch
# pulls a multi-GB CUDA build; override with `make TORCH=torch==X.Y.Z`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test install install-dev lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install "$(TORCH)"
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install -e ".[dev,ray,evals,inspect]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/alignlab run

test: install-dev
	$(PY) -m pytest

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

bench: install-dev
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) alignlab-runs .pytest_cache .mypy_cache .ruff_cache
