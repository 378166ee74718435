# The two set-up commands: `make book` (install, execute every notebook, build the HTML book)
# and `make test` (install, run the test suite). Installing is idempotent: the stamp file below
# is rebuilt only when pyproject.toml changes, and system packages are installed only when missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cpmc-installed
BOOK_ARGS ?=
PYTEST_ARGS ?=
# Where pip takes torch and torchvision from. Empty: PyPI's default build (CUDA; it runs on CPUs too,
# about 6 GB installed). For a machine without a GPU, PyTorch's CPU index installs far less:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
SWEEP ?= papermill_runs/ablation.yaml
# where a headless Chromium may live besides the PATH (as cpmc_lib/book/browser.py looks)
CHROMIUM_PATHS ?= /usr/lib/chromium/chromium-headless-shell /usr/lib/chromium-headless-shell/chromium-headless-shell

.PHONY: help install system system-test book book-quick test lint lab sweep clean

help:
	@echo "make book   - install, execute every notebook on the default benchmark, build the HTML book"
	@echo "make test   - install, run the test suite"
	@echo "make lab    - open JupyterLab on notebooks/"
	@echo "make sweep  - run a papermill sweep (SWEEP=$(SWEEP))"
	@echo "make clean  - remove build outputs (keeps .venv, data/ and runs/)"
	@echo "make system - install the system packages building needs (as root, with apt-get), or name them"

# System packages (Debian/Ubuntu names). Installing compiles pydensecrf2, which ships only as source,
# with g++ (build-essential) and the Python headers (python3-dev); `python3 -m venv` needs
# python3-venv; the book test needs a headless Chromium (chromium-headless-shell). $(call
# SYSTEM_PACKAGES,yes) checks all four, $(call SYSTEM_PACKAGES,no) all but the browser. Nothing
# missing: nothing happens. As root with apt-get: one `apt-get update`, then the missing packages.
# Otherwise make names what to install and stops; the browser alone missing stops it only under
# CI=true (elsewhere the browser check of the book is skipped).
define SYSTEM_PACKAGES
missing=""; optional=""; \
command -v g++ >/dev/null 2>&1 || missing="$$missing build-essential"; \
$(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || missing="$$missing python3-dev"; \
test -x $(PY) || $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
if [ "$(1)" = yes ] && ! command -v chromium-headless-shell >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1 \
   && ! for p in $(CHROMIUM_PATHS); do test -x "$$p" && break; done; then \
  case "$${CI:-}" in true|TRUE|True|1) missing="$$missing chromium-headless-shell";; *) optional=" chromium-headless-shell";; esac; \
fi; \
if [ -z "$$missing$$optional" ]; then exit 0; fi; \
if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
  echo "installing system packages:$$missing$$optional (apt-get)"; \
  apt-get update -qq || { echo "error: apt-get update failed; install$$missing$$optional by hand"; exit 1; }; \
  if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
    || { echo "error: apt-get could not install$$missing"; exit 1; }; fi; \
  if [ -n "$$optional" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$optional >/dev/null \
    || echo "note: apt-get could not install$$optional; the browser check of the book is skipped"; fi; \
elif [ -n "$$missing" ]; then \
  echo "error: building needs system packages that are missing:$$missing"; \
  echo "install them (Debian/Ubuntu), then run make again:"; \
  echo "  sudo apt-get update && sudo apt-get install$$missing$$optional"; \
  exit 1; \
else \
  echo "note: no headless Chromium; the browser check of the book is skipped (sudo apt-get install chromium-headless-shell)"; \
fi
endef

system:
	@$(call SYSTEM_PACKAGES,no)

system-test:
	@$(call SYSTEM_PACKAGES,yes)

$(STAMP): pyproject.toml
	@$(call SYSTEM_PACKAGES,no)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet torch torchvision --index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev,baselines]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cpmc)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(PY) -m cpmc_lib.book build $(BOOK_ARGS)

book-quick: $(STAMP)
	$(PY) -m cpmc_lib.book build --quick $(BOOK_ARGS)

# system packages first (the browser too: one apt-get update), then the install, then the suite
test: system-test
	@$(MAKE) --no-print-directory install
	$(PY) -m pytest -q $(PYTEST_ARGS)

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
