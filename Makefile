# Two set-up commands on a fresh machine:
#   make demo   creates .venv, installs the package, runs the main job on its embedded default
#   make test   creates .venv, installs the package with its test extra, runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test venv clean

$(BIN)/nnunet-genesis: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/nnunet-genesis

demo: venv
	$(BIN)/nnunet-genesis demo -o demo_output

test: venv
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) demo_output build *.egg-info
