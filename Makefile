# The two set-up commands: `make run` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEV_KEY ?= dev-key-change-me
PORT   ?= $(or $(BRIDGE_PORT),8080)
CONSOLE_PORT ?= $(or $(BRIDGE_CONSOLE_PORT),8090)

.PHONY: run test test-cluster lint typecheck pytest bench bench-cluster broker clean install install-dev install-bench definitions browser screenshots

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
run: install broker
	@BIN=$(BIN) BRIDGE_PORT=$(PORT) BRIDGE_CONSOLE_PORT=$(CONSOLE_PORT) DEV_KEY='$(DEV_KEY)' ./.ci/make-run

lint: install-dev
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench

typecheck: install-dev
	$(BIN)/mypy

# The publish and ack paths run again on aiormq's public API (the fallback when the fast
# path's check of aiormq's internals fails): see bridge/amqp/aiormq_internals.py.
PUBLIC_PATH_TESTS := tests/test_publisher.py tests/test_receiver.py tests/test_faults.py \
	tests/test_aiormq_internals.py

pytest: install-dev broker browser
	$(BIN)/pytest
	BRIDGE_PUBLISH_PATH=public $(BIN)/pytest $(PUBLIC_PATH_TESTS)

# The console's screenshots in docs/console/ (docs/console.md), taken by its browser tests.
screenshots: install-dev broker browser
	BRIDGE_SCREENSHOTS=docs/console $(BIN)/pytest -q tests/test_console_browser.py

test: lint typecheck pytest

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
	$(BIN)/pytest -m cluster

bench-cluster: install-dev broker
	$(BIN)/python -m bench.cluster_bench

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
