# The two set-up commands: `make run` and `make test`. Both create .venv and install.
# make test leaves the slow, browser and cluster tests to make test-all / make test-cluster
# (docs/testing.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEV_KEY ?= dev-key-change-me
PORT   ?= $(or $(BRIDGE_PORT),8080)
CONSOLE_PORT ?= $(or $(BRIDGE_CONSOLE_PORT),8090)

.PHONY: run demo test test-all test-cluster lint typecheck pytest pytest-all bench bench-cluster broker clean install install-dev install-bench definitions browser screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-bench: $(VENV)/.installed-bench

broker:
	@./.ci/ensure-broker

# Headless Chromium and its driver for the console's browser tests (apt-get when missing).
browser:
	@./.ci/ensure-browser

# `make run`: serve, a demo worker and the console together (.ci/make-run); one Ctrl-C stops
# all three. Ports: BRIDGE_PORT / BRIDGE_CONSOLE_PORT (or make run PORT=N CONSOLE_PORT=N).
# The worker's subscribers: SUBSCRIBERS=FILE (default: one demo subscriber whose queue is
# named after BRIDGE_EXCHANGE). The CLI is then .venv/bin/mintsoft-bridge.
run: install broker
	@BIN=$(BIN) BRIDGE_PORT=$(PORT) BRIDGE_CONSOLE_PORT=$(CONSOLE_PORT) DEV_KEY='$(DEV_KEY)' ./.ci/make-run

# `make demo`: make run plus the sandbox Mintsoft (docs/sandbox.md) and sync pointed at it
# (.ci/make-demo): orders appear, sync enrols them, the sandbox despatches them and calls the
# bridge, dropping some calls, and sync recovers those. No Mintsoft account needed. Sandbox
# port: SANDBOX_PORT (default 8070); its flags: SANDBOX_ARGS="--orders 20 --drop 0.5".
SANDBOX_PORT ?= 8070
demo: install broker
	@BIN=$(BIN) BRIDGE_PORT=$(PORT) BRIDGE_CONSOLE_PORT=$(CONSOLE_PORT) DEV_KEY='$(DEV_KEY)' \
		SANDBOX_PORT=$(SANDBOX_PORT) ./.ci/make-demo

lint: install-dev
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench

typecheck: install-dev
	$(BIN)/mypy

# Tests run in TEST_WORKERS processes (pytest-xdist); the tests that stop or kill a private
# RabbitMQ node share one of them (--dist loadgroup, tests/conftest.py). The publisher and
# fault tests run on both publish paths by themselves (the both_publish_paths marker).
TEST_WORKERS ?= 4
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=10
# pytest exits 5 when a selection holds no test: nothing failed.
NO_TESTS_OK := || [ $$? -eq 5 ]

pytest: install-dev broker
	$(PYTEST) -m 'not slow and not browser and not cluster' $(NO_TESTS_OK)

# Everything but the cluster: the browser tests too (Chromium installed here, never by make
# test), then the slow fault and soak tests one at a time, as they measure and kill things.
pytest-all: install-dev broker browser
	$(PYTEST) -m 'not slow and not cluster' $(NO_TESTS_OK)
	$(BIN)/pytest -n 0 -m 'slow and not cluster' $(NO_TESTS_OK)

# The console's screenshots in docs/console/ (docs/console.md), taken by its browser tests.
screenshots: install-dev broker browser
	BRIDGE_SCREENSHOTS=docs/console $(BIN)/pytest -q tests/test_console_browser.py tests/test_console_audit_browser.py

test: lint typecheck pytest

test-all: lint typecheck pytest-all

bench: install-bench broker
	$(BIN)/python -m bench

# deploy/rabbitmq/definitions.json: the receiver's topology and the example subscribers'
# queues, from the same code as `topology` (a test fails when the file is stale).
definitions: install
	$(BIN)/mintsoft-bridge topology --definitions --exchange mintsoft.orders \
		--config deploy/subscribers.example.toml > deploy/rabbitmq/definitions.json

# Scale-out tests on a private three-node RabbitMQ cluster (started and removed by the
# tests themselves; the broker on 5672 is not touched). About a minute and a half.
test-cluster: install-dev
	$(BIN)/pytest -m cluster $(NO_TESTS_OK)

bench-cluster: install-dev broker
	$(BIN)/python -m bench.cluster_bench

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
