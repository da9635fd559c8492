# cpm_lab: two commands on a fresh machine with Python 3.10+:
#   make lab    install into .venv and open JupyterLab on the tutorials
#   make test   install if needed and run every test, notebooks included
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BIN   := $(VENV)/bin
STAMP := $(VENV)/.cpm_lab-installed

.PHONY: install lab demo test test-fast lint browser-deps bench clean help

help:
	@echo "make lab   - install into $(VENV) and open JupyterLab on notebooks/"
	@echo "make demo  - headless demo: figures and a table in runs/demo/"
	@echo "make test  - install if needed and run the whole test suite (notebooks, browser test)"
	@echo "make lint  - ruff: lint and import order of the package, tests, benchmarks and notebooks"
	@echo "make bench - print the benchmark figures (data, training, loaders)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "cpm_lab needs Python 3.10+, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# torch is installed first, and only when missing, so an open `torch>=2.2` requirement never
# pulls a multi-GB CUDA build over a working one. Override with e.g. TORCH_SPEC="torch==2.5.1".
$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[dev,notebooks,onnx]"
	@touch $(STAMP)

install: $(STAMP)

# JupyterLab refuses to run as root unless told; containers often are root.
lab: install
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

demo: install
	$(BIN)/cpm-lab demo --out runs/demo

# Debian's Chromium drives the browser test; installed when missing and apt-get can run.
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "no /usr/bin/chromium and no root apt-get: the browser test will be skipped"; fi; \
	fi

test: install browser-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/bench_synthetic.py
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs .pytest_cache *.egg-info
