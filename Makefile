# One task runner for people, README and CI. `make run` and `make test` install everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: run ui index search test test-fast lint format eval bench bench-serve clean

# torch first, pinned: 2.13.0 is a CPU build on local disk; an unpinned torch would fetch a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	@echo "Installing abstract-rag (llama-cpp-python compiles on first install: about 5 minutes on 2 cores)"
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

index: $(BIN)/.installed
	$(BIN)/rag index --progress

run: index
	$(BIN)/rag serve

search: index
	$(BIN)/rag search "parameter-efficient fine-tuning of large language models"

test: $(BIN)/.installed-dev
	$(BIN)/ruff check rag ui tests bench
	$(BIN)/pytest -ra

test-fast: $(BIN)/.installed-dev
	$(BIN)/pytest -ra -m "not slow and not browser"

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check rag ui tests bench
	$(BIN)/ruff format --check rag ui tests bench

format: $(BIN)/.installed-dev
	$(BIN)/ruff format rag ui tests bench
	$(BIN)/ruff check --fix rag ui tests bench

eval: index
	$(BIN)/rag eval tests/data/dev.jsonl

bench: $(BIN)/.installed-dev
	$(BIN)/python bench/run.py

bench-serve: index $(BIN)/.installed-dev
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
