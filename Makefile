# Two entry points on a fresh machine (see README): `make demo` and `make test`.
# Both create .venv, install the CPU build of torch first (a GPU user installs their CUDA build
# instead, see README), then colorgan.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: demo test lint install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/colorgan demo

lint: install
	$(BIN)/ruff check colorgan tests benchmarks
	$(BIN)/ruff format --check colorgan tests benchmarks
	$(BIN)/mypy colorgan

test: lint
	$(BIN)/python -m pytest -q --durations=10
