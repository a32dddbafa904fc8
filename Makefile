# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/dagster_home
export LITELLM_LOCAL_MODEL_COST_MAP := True
PYTEST_ARGS ?=

.PHONY: install demo test ui clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: a fresh SQLite demo database under dagster_home/, the
## offline model. Re-runnable: each run starts over (--reset deletes only dagster_home/bindu.sqlite).
demo: $(STAMP)
	$(BIN)/bindu-dspy demo run --reset

## The whole test suite, on SQLite and PostgreSQL (127.0.0.1:5432).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

## The Dagster UI on the same dagster_home as the demo.
ui: $(STAMP)
	@echo "Dagster UI: http://127.0.0.1:3000"
	BINDU_DATABASE_URL=$${BINDU_DATABASE_URL:-sqlite:///$(DAGSTER_HOME)/bindu.sqlite} \
		$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## Forget the demo's database and runs (keeps dagster_home/dagster.yaml).
clean-demo:
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
