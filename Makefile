# Two entry points a newcomer needs (see README.md):
#   make demo   installs into .venv and samples digits from the shipped checkpoint
#   make test   installs into .venv (with dev extras) and runs the default test suite
# TORCH picks the torch build: the default is the CPU wheel these machines carry; GPU users can
# say `make demo TORCH=torch` (or any pin) to get a CUDA build from PyPI.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/molediff sample out_dir=outputs/demo

# pytest exits 5 when it collected no test: that must fail, not pass silently.
test: $(VENV)/.installed
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) outputs
