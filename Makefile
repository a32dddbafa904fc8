# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BINDU_VENV := .venv-bindu
BINDU_STAMP := $(BINDU_VENV)/.installed-stamp
BINDU_REQUIREMENTS := tests/bindu_real/requirements.txt
export DAGSTER_HOME := $(CURDIR)/dagster_home
export LITELLM_LOCAL_MODEL_COST_MAP := True
PYTEST_ARGS ?=

.PHONY: install bindu-venv demo test ui clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The real `bindu` server the tests in tests/bindu_real start: a second venv on CPython >= 3.12
## (found at run time) with bindu from PyPI and our runtime without the pipelines extra, as an
## agent installs them. Rebuilt in place when the requirements or pyproject.toml change.
$(BINDU_STAMP): $(BINDU_REQUIREMENTS) pyproject.toml
	test -x $(BINDU_VENV)/bin/python || { py=$$(sh tests/bindu_real/find_python.sh) && "$$py" -m venv $(BINDU_VENV); }
	$(BINDU_VENV)/bin/pip install --quiet --upgrade pip
	$(BINDU_VENV)/bin/pip install --quiet -r $(BINDU_REQUIREMENTS) -e .
	touch $(BINDU_STAMP)

bindu-venv: $(BINDU_STAMP)

## The main job on the embedded default: a fresh SQLite demo database under dagster_home/, the
## offline model. Re-runnable: each run starts over (--reset deletes only dagster_home/bindu.sqlite).
demo: $(STAMP)
	$(BIN)/bindu-dspy demo run --reset

## The whole test suite, on SQLite and PostgreSQL (127.0.0.1:5432).
test: $(STAMP) $(BINDU_STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

## The Dagster UI on the same dagster_home as the demo.
ui: $(STAMP)
	@echo "Dagster UI: http://127.0.0.1:3000"
	BINDU_DATABASE_URL=$${BINDU_DATABASE_URL:-sqlite:///$(DAGSTER_HOME)/bindu.sqlite} \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## Forget the demo's database and runs (keeps dagster_home/dagster.yaml).
clean-demo:
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
