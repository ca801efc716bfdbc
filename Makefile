# Xiangyun: every entry point a person needs. `make help` lists them.
PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip
STAMP  := .stack/.installed
XY     := $(PYTHON) -m xiangyun

.DEFAULT_GOAL := help
.PHONY: help setup stack-up stack-down stack-status demo test unit integration bench lint typecheck check clean

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml setup.py streams/ingest/_pool_table.c
	@mkdir -p .stack
	$(PIP) install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## install the package and its tools (editable)

stack-up: setup ## start Kafka (KRaft), Redis and Prometheus; installs what is missing
	$(XY) stack up

stack-down: ## stop the services the stack started (by PID)
	$(XY) stack down

stack-status: ## show what runs where
	$(XY) stack status

demo: stack-up ## the end-to-end demo on sample data (exit 1 if counts do not add up)
	$(XY) demo

test: stack-up ## unit and integration tests against the real local stack
	$(PYTHON) -m pytest tests

unit: setup ## unit tests only (no services)
	$(PYTHON) -m pytest tests/unit

integration: stack-up ## integration tests only
	$(PYTHON) -m pytest tests/integration

bench: stack-up ## benchmark: ingest flow vs a raw Kafka pipe (200,000 records, 4 runs, min/median/max)
	$(XY) bench

lint: setup ## ruff and the import-layer contracts (import-linter)
	ruff check .
	ruff format --check .
	lint-imports

typecheck: setup ## mypy (strict)
	mypy xiangyun xiangyun_data streams connectors monitoring

check: lint typecheck unit ## everything that needs no services

clean: stack-down ## stop the stack and delete its data (keeps the cached Kafka jars)
	rm -rf .stack/kafka/data .stack/redis .stack/prometheus .stack/faust .stack/*.log
