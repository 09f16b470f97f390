# opswarm developer commands. `make help` lists them. Settings come from OPSWARM_* environment variables.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PYTHON := $(VENV)/bin/python
OPSWARM := $(VENV)/bin/opswarm
STATE_DIR := $(or $(OPSWARM_STATE_DIR),.opswarm)
# What `make clean` removes from the state directory (the per-checkout tools under .opswarm/tools stay).
STATE_SUBDIRS := kafka redis ferretdb qdrant prometheus alertmanager bridge agents targets deployments scenarios logs run

.PHONY: help setup up down status doctor test demo bench-bus bench-kb bench-storm clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## Install what a fresh clone needs (apt, .venv, Kafka classpath, FerretDB, etcd, Kubernetes); fast when done
	@deploy/setup.sh

up: setup ## Start the local stack (Kafka, Redis, FerretDB, Prometheus) and create the topics
	@$(OPSWARM) up

down: ## Stop the local stack
	@if [ -x $(OPSWARM) ]; then $(OPSWARM) down; else echo "no $(OPSWARM): nothing to stop"; fi

status: setup ## Show the local stack's processes
	@$(OPSWARM) status

doctor: setup ## Round trip through Kafka, Redis, MongoDB and Qdrant
	@$(OPSWARM) doctor

# Starts the stack only if it is not fully running, and then stops it again afterwards; exits with the
# status of import-linter / pytest.
test: setup ## Lint the import layers and run the tests against the local stack
	@started=0; \
	if ! $(OPSWARM) status --check >/dev/null; then \
		$(OPSWARM) up || exit $$?; \
		started=1; \
	fi; \
	rc=0; \
	$(VENV)/bin/lint-imports && $(VENV)/bin/pytest -q || rc=$$?; \
	if [ $$started = 1 ]; then $(OPSWARM) down >/dev/null || echo "make test: stopping the stack failed" >&2; fi; \
	exit $$rc

demo: setup ## The whole product: real faults, Prometheus, Alertmanager, the bridge, the swarm; a report at the end
	@$(OPSWARM) demo

bench-bus: setup up ## Benchmark the event bus against the local stack
	@$(PYTHON) -m deploy.bench_bus

bench-kb: setup ## Benchmark the knowledge base: ingest rate and search latency at 10,000 chunks, local Qdrant
	@$(PYTHON) -m deploy.bench_kb

bench-storm: setup up ## Benchmark alert storms: 100,000 alerts through the bridge and Kafka, against the raw ceiling
	@$(PYTHON) -m deploy.bench_storm

clean: down ## Stop the stack and remove its state (data, logs, pid files); keeps .opswarm/tools
	rm -rf $(addprefix $(STATE_DIR)/,$(STATE_SUBDIRS))
