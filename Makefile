# napari-ssseg: the two commands the README opens with, and a few helpers.
#   make demo   set up ./.venv and run the whole pipeline on the sample data
#   make test   set up ./.venv and run the test suite headless (ruff + mypy + pytest, GUI under Xvfb)
VENV := .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-output
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow test-all lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/ssseg demo --out $(DEMO_OUT)

test: setup lint
	$(PY) -m pytest -m "not slow" --timeout 900 $(PYTEST_ARGS)

# the tests marked slow (about 7 min on 2 cores); CI runs them after `make test`
test-slow: setup
	$(PY) -m pytest -m slow --timeout 1800 $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest --timeout 1800 $(PYTEST_ARGS)

# ruff, then mypy on the layers without napari/Qt (about 25 s from a clean clone, 1 s cached)
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy src/napari_ssseg/core src/napari_ssseg/io src/napari_ssseg/ml

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .mypy_cache build dist
