# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
# the real FHIR R4 server the tests and the harness start (sekmet-fhir, pinned, own venv)
FHIR_VENV ?= .venv-fhir
# patients per synthetic export in `make bench-review`
SIZES ?= 1000,10000

.PHONY: install install-runtime install-spark runtime-check fhir-server run test lint check clean harness bench bench-throughput bench-review

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# what the container image runs: the runtime package (not editable) with the PostgreSQL driver
install-runtime:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '.[postgres]'

# the image's install, checked outside the source tree: the wheel migrates a database (its
# migrations are packaged) and evaluates the seed with the card wording the image copies (cards/)
runtime-check:
	rm -rf .venv-runtime-check build
	$(MAKE) install-runtime VENV=.venv-runtime-check
	cd /tmp && export IVIG_CDS_DATABASE_PATH=$$(mktemp -d)/check.db IVIG_CDS_CARDS_DIR=$(CURDIR)/cards \
		&& $(CURDIR)/.venv-runtime-check/bin/ivig-cds db upgrade \
		&& $(CURDIR)/.venv-runtime-check/bin/ivig-cds evaluate \
			$(CURDIR)/fhir_fixtures/seed/order-sign-request.json --json | grep -q insufficient-documentation
	rm -rf .venv-runtime-check build

install-spark: $(VENV)/.spark-installed ## the 'spark' extra (review --engine spark; needs Java 17+)

$(VENV)/.spark-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $@

fhir-server: install ## install the local FHIR R4 server used by the tests and the harness
	$(BIN)/python -m tools.local_fhir install $(FHIR_VENV)

run: install ## install and start the service with its demo data
	IVIG_CDS_DEMO=true $(BIN)/ivig-cds serve --host $(HOST) --port $(PORT)

test: install fhir-server ## install and run the whole test suite
	IVIG_CDS_FHIR_VENV=$(FHIR_VENV) $(BIN)/pytest -q

lint: install ## ruff (lint and format) + mypy --strict (the runtime package and the tools)
	$(BIN)/ruff check cds_service tools tests
	$(BIN)/ruff format --check cds_service tools tests
	$(BIN)/mypy --strict cds_service tools
	$(BIN)/hadolint Dockerfile

harness: install ## scenario harness against a local FHIR server and service (no network)
	$(BIN)/python -m tools.harness --local-fhir $(FHIR_VENV) --cleanup

check: lint test

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed fhir-server ## order-sign latency vs a floor (QUICK=1: 200 only)
	$(BIN)/python -m bench.run --fhir-venv $(FHIR_VENV) $(if $(QUICK),--quick,)

bench-throughput: $(VENV)/.bench-installed ## rps, p50/p99 and discovery under load at 1 and N workers
	$(BIN)/python -m bench.throughput

bench-review: $(VENV)/.bench-installed ## ivig-cds review: patients/s and peak memory (SIZES=1000,10000)
	$(BIN)/python -m bench.review --sizes $(SIZES)

clean:
	rm -rf $(VENV) $(FHIR_VENV) .pytest_cache .mypy_cache .ruff_cache
