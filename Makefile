# The two set-up commands: `make book` (install, execute every notebook, build the HTML book)
# and `make test` (install, run the test suite). Installing is idempotent: the stamp file below
# is rebuilt only when pyproject.toml changes.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cpmc-installed
BOOK_ARGS ?=
PYTEST_ARGS ?=
SWEEP ?= papermill_runs/ablation.yaml

.PHONY: help install book book-quick test browser lint lab sweep clean

help:
	@echo "make book   - install, execute every notebook on the default benchmark, build the HTML book"
	@echo "make test   - install, run the test suite"
	@echo "make lab    - open JupyterLab on notebooks/"
	@echo "make sweep  - run a papermill sweep (SWEEP=$(SWEEP))"
	@echo "make clean  - remove build outputs (keeps .venv, data/ and runs/)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,baselines]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cpmc)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(PY) -m cpmc_lib.book build $(BOOK_ARGS)

book-quick: $(STAMP)
	$(PY) -m cpmc_lib.book build --quick $(BOOK_ARGS)

test: $(STAMP) browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Debian's headless Chromium for the book test (Playwright's own download needs the internet).
browser:
	@command -v chromium-headless-shell >/dev/null 2>&1 || test -x /usr/lib/chromium/chromium-headless-shell || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell >/dev/null; \
	    else echo "note: no chromium-headless-shell; the browser check of the book is skipped (apt-get install chromium-headless-shell)"; fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

sweep: $(STAMP)
	@if [ -f "$(SWEEP)" ]; then $(PY) -m cpmc_lib sweep $(SWEEP); \
	else echo "no sweep definition $(SWEEP) yet: papermill sweeps arrive with the sweeps chapter"; fi

clean:
	rm -rf build book/_build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
