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

# nnU-Net v1 (import name `nnunet`) is needed only by the import-v1 equivalence test;
# --no-deps because its own pins would downgrade nnU-Net v2's dependencies.
$(VENV)/.test-deps: $(BIN)/nnunet-genesis
	$(BIN)/python -m pip install --quiet --no-deps nnunet==1.7.1
	touch $@

test: venv $(VENV)/.test-deps
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) demo_output build *.egg-info
