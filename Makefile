# Two commands set everything up on a fresh Debian or Ubuntu machine:
#   make demo   a 3-host sandbox cluster, provisioned with playbooks/site.yml
#   make test   lint beside the whole suite: unit, store, playbook, cloud, sandbox integration (what CI runs)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Python caches each module's bytecode on its first import (the venv is installed with
# --no-compile). An environment that sets PYTHONDONTWRITEBYTECODE (some CI images do)
# makes every process compile every module it imports, every time: the suite starts
# thousands of Python processes (the CLI, ansible-playbook, moto, the test workers).
# tests/cloud alone: 132 CPU-seconds with it set, 98 without.
unexport PYTHONDONTWRITEBYTECODE
DEBIAN_PACKAGES := make python3-venv systemd-container debootstrap debian-archive-keyring \
  openssh-client iproute2 nftables redis-server postgresql unzip chromium
# Installed without their recommended packages (Prometheus would bring the node exporter).
DEBIAN_PACKAGES_BARE := prometheus

.PHONY: help system-deps venv lock demo demo-down lint unit controller-cache integration suite molecule test clean

help:  ## Show the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

system-deps:  ## Install the Debian packages the sandbox and the tests need (as root).
	@missing=$$(for p in $(DEBIAN_PACKAGES) $(DEBIAN_PACKAGES_BARE); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  bare=$$(for p in $$missing; do case " $(DEBIAN_PACKAGES_BARE) " in *" $$p "*) echo $$p;; esac; done); \
	  full=$$(for p in $$missing; do case " $(DEBIAN_PACKAGES_BARE) " in *" $$p "*) ;; *) echo $$p;; esac; done); \
	  guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then guard=1; \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
	  apt-get update -q \
	    && { [ -z "$$full" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$full; } \
	    && { [ -z "$$bare" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	         --no-install-recommends $$bare; }; \
	  status=$$?; [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; [ $$status -eq 0 ]; \
	fi

# --no-compile: no bytecode at install time; each module is compiled when it is first
# imported (the tools import a fraction of the packages' files): 25 s -> 15 s here.
$(BIN)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile -c constraints.txt -r requirements-dev.txt -e .
	touch $@

venv: $(BIN)/.installed  ## Create the virtual environment with every dependency.

lock: venv  ## Rewrite constraints.txt from the virtual environment (after changing a pin).
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

demo: system-deps venv  ## Bring up a 3-host sandbox and provision it with site.yml.
	$(BIN)/clusterai sandbox up --hosts 3
	$(BIN)/clusterai sandbox status --json > .demo.json
	$(BIN)/ansible-playbook -i "$$($(BIN)/python scripts/demo_info.py inventory < .demo.json)" \
	  playbooks/site.yml
	$(BIN)/python scripts/demo_info.py summary < .demo.json
	rm -f .demo.json

demo-down:  ## Remove the demo sandbox.
	$(BIN)/clusterai sandbox down

lint: venv  ## ansible-lint (production), yamllint, ruff, mypy --strict, import contracts.
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy clusterai_runner
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_argument_specs.py

unit: venv  ## Unit tests, store tests (SQLite and PostgreSQL), facts-free playbook tests, cloud tests (moto).
	$(BIN)/pytest -n $(UNIT_PARALLEL) tests/unit tests/store tests/playbooks tests/cloud

# Unit tests run on two workers (each starts its own PostgreSQL; no test binds an address).
UNIT_PARALLEL ?= 2

# The integration modules and the Molecule scenarios, each with a sandbox and a fact cache
# of its own, run on three pytest-xdist workers (tests/conftest.py keeps each module on one
# worker and hands each scenario out alone; PARALLEL=0 runs them one after another). Much of
# a worker's time is spent waiting on its hosts: with the firewall and TLS converges, three
# workers took 699 s where two took about 730 s on 2 cores (one: 1,138 s, earlier). Four
# gain nothing now: the 2 CPUs are busy to the end (830 tests: 1,216 s on three workers,
# 1,222 s on four, the CPUs 99 % busy on average over the run; 97 % on three).
# The controller's caches are built once first. The gateway's tests are scheduled last in
# the same run, so they fill the end of it while the other workers finish.
PARALLEL ?= 3

controller-cache: venv  ## Build the caches the roles fill on the controller (wheelhouses, model).
	ANSIBLE_STRATEGY=linear $(BIN)/ansible-playbook -i localhost, -c local \
	  -e ansible_python_interpreter=$(CURDIR)/$(BIN)/python -e with_gateway=true \
	  tests/controller_cache.yml > /dev/null

integration: system-deps venv controller-cache  ## Sandbox hosts (root), Molecule, the gateway over llama.cpp.
	$(BIN)/pytest -n $(PARALLEL) --dist loadscope --durations=50 tests/integration tests/gateway

molecule: system-deps venv  ## The Molecule scenarios alone (make integration runs them too).
	$(BIN)/molecule test --all

# Everything in one pytest-xdist run beside lint, and the machine's CPUs busy to the end:
# the scheduler (tests/conftest.py) starts the long sandbox units first and hands out the
# unit, store, playbook and cloud tests last, at niceness 10, so they fill the end of the
# run while the last sandboxes finish. In CI here: 13 min 7 s with lint and the unit
# tests side by side first, then the integration tests; 12 min 12 s in one run. (The unit
# tests in a pytest run of their own beside the integration tests, at niceness 10: 14 min
# 5 s with the cloud join test, slower than one run.)
SUITE := tests/integration tests/gateway tests/cloud tests/playbooks tests/store tests/unit

suite: system-deps venv controller-cache  ## The whole test suite in one run (what make test runs beside lint).
	$(BIN)/pytest -n $(PARALLEL) --dist loadscope --durations=50 $(SUITE)

test:  ## Everything CI runs: lint beside the whole suite.
	$(MAKE) -j2 --output-sync=target lint suite

clean:  ## Remove the virtual environment and caches (not the sandbox cache).
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
