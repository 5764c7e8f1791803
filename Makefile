# smtptls — the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test venv system lint bench clean lab-up lab-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system:
	bash scripts/install-system.sh

## run: start the main service on the embedded SQLite default (no config needed)
run: $(STAMP)
	$(VENV)/bin/smtptls --log-level info policyd

## test: install everything the tests need (Debian packages included) and run the full suite
test: system $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

lab-up: $(STAMP)
	$(PY) -m tests.lab up

lab-down: $(STAMP)
	$(PY) -m tests.lab down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
