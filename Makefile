# `make test` and `make demo` work on a fresh machine with Python 3.10+ and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

# Reinstall only when the project's metadata changed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

# The main job: the Gradio app, serving the detector shipped in the package (nothing to train).
demo: $(STAMP)
	$(VENV)/bin/deepfake-xai demo $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/explain_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
