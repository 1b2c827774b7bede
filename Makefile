# Two entry points on a fresh machine (see README): `make demo` and `make test`.
# Both create .venv, install the CPU build of torch first (a GPU user installs their CUDA build
# instead, see README), then colorgan.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: demo test lint install chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/colorgan demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check colorgan tests benchmarks
	$(BIN)/ruff format --check colorgan tests benchmarks
	$(BIN)/mypy colorgan

# tests/test_browser.py drives Debian's Chromium (no browser download): installed here when
# missing and we are root with apt-get (CI); elsewhere those tests skip unless
# COLORGAN_REQUIRE_BROWSER=1 (.ci/run sets it).
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

test: lint chromium
	$(BIN)/python -m pytest -q --durations=25
