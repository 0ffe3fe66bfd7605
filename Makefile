# Two entry points: `make demo` and `make test`. Both create .venv and install indis into it first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest workers: tests are independent (each writes under its own tmp_path); one file per worker keeps module fixtures
# shared. Workers x torch threads (OMP_NUM_THREADS, default 1) = usable cores: more would oversubscribe them.
# (sched_getaffinity is Linux-only: elsewhere all CPUs count.)
TEST_WORKERS ?= $(shell $(PY) -c "import os; c = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1; print(max(1, c // max(1, int(os.environ.get('OMP_NUM_THREADS') or 1))))")

.PHONY: demo test install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is installed first and pinned, so the resolver never pulls the multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/indis demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV)
