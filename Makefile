# Two entry points: `make demo` (build the environment, run the main job on an embedded default)
# and `make test` (build the environment, run the test suite). Both are safe on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: env demo test clean

env: $(STAMP)

# torch first, alone, so that pip takes the CPU wheel on disk and never resolves a CUDA build.
$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt -e '.[indicators,lavis,gpt,parquet,report,test]'
	$(BIN)/pip install -q --no-deps -c constraints.txt salesforce-lavis
	touch $(STAMP)

demo: env
	$(BIN)/igpt4 demo --out demo_out

test: env
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) demo_out
