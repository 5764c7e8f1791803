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

## run: start the Postfix policy daemon with no configuration file: the SQLite cache goes
## to the state directory ($SMTPTLS_STATE_DIR, /var/lib/smtptls as root, else
## ~/.local/state/smtptls); it prints the cache path, the main.cf lines and how to stop it
run: $(STAMP)
	$(VENV)/bin/smtptls --log-level info policyd

## test: install everything the tests need (Debian packages included) and run the full suite
test: system $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

## lab-up: the loopback test lab in the foreground; prints a ready smtptls.toml for it
## lab-down: stops the lab that lab-up started (its pid is in $(LAB_PID)), no other
LAB_PID := $(VENV)/lab-up.pid

lab-up: $(STAMP)
	@echo $$$$ > $(LAB_PID); exec $(PY) -m tests.lab up

lab-down:
	@pid=$$(cat $(LAB_PID) 2>/dev/null); \
	if [ -n "$$pid" ] && grep -qs tests.lab /proc/$$pid/cmdline; then \
		kill -TERM $$pid; while kill -0 $$pid 2>/dev/null; do sleep 0.2; done; \
		echo "stopped the lab started by make lab-up (pid $$pid)"; \
	else echo "no lab started by make lab-up is running"; fi; rm -f $(LAB_PID)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
