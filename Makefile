# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test lint check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: install ## install and start the service with its demo data
	IVIG_CDS_DEMO=true $(BIN)/ivig-cds serve --host $(HOST) --port $(PORT)

test: install ## install and run the whole test suite
	$(BIN)/pytest -q

lint: install ## ruff + mypy --strict
	$(BIN)/ruff check cds_service tests
	$(BIN)/mypy --strict cds_service

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
