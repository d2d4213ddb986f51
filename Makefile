# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make run   -- create .venv, install the app's requirements (first time only), start the Studio
#   make test  -- also install test requirements and the Debian packages the tests need, run pytest
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501
PYTEST_ARGS ?=

.PHONY: run classroom test test-fast system-deps bench-quick demo-voices clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.app-deps: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.test-deps: requirements.txt requirements-test.txt $(VENV)/.app-deps
	$(BIN)/python -m pip install -q -r requirements-test.txt
	touch $@

run: $(VENV)/.app-deps
	$(BIN)/python -m streamlit run app.py --server.port $(PORT)

# the Studio over HTTPS on the local network (phones can record): a local self-signed certificate on
# first use (runs/classroom/), the address and its QR code printed, the certificate warning explained
classroom: $(VENV)/.app-deps
	$(BIN)/python scripts/classroom.py --port $(PORT)

system-deps:
	bash scripts/install_system_deps.sh

test: $(VENV)/.test-deps system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the unit tests only (no browser), for quick iterations
test-fast: $(VENV)/.test-deps
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

bench-quick: $(VENV)/.app-deps
	$(BIN)/python -m fineprune bench perf --quick

clean:
	rm -rf $(VENV) .pytest_cache
