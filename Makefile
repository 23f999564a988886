# Two commands set up everything on a fresh Debian 12 machine (as root):
#   make demo   - brings the rehearsal lab up and runs the upgrade
#   make test   - runs every test tier (unit, functional, integration on the lab)
SHELL := /bin/bash
PY    := .venv/bin/python
LAB   := $(PY) -m lab.labctl

.PHONY: deps venv system lab-up lab-down lab-status lab-reset demo test test-fast \
        test-unit test-functional test-integration faults bench bench-scale bench-lb clean

deps: system venv

system:
	@bash lab/bootstrap.sh

venv: .venv/.installed

.venv/.installed: requirements.txt
	@test -x $(PY) || python3 -m venv .venv
	@.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

lab-up: deps
	@$(LAB) up $(if $(HOSTS),--hosts $(HOSTS))

lab-down: venv
	@$(LAB) down

lab-status: venv
	@$(LAB) status

lab-reset: deps
	@$(LAB) reset

demo: deps
	@$(PY) -m lab.demo

# Fast tiers: no lab needed.
test-fast: deps
	@$(PY) -m pytest tests/unit tests/functional -q

test-unit: venv
	@$(PY) -m pytest tests/unit -q

test-functional: deps
	@$(PY) -m pytest tests/functional -q

# Integration tests bring the lab up themselves (tests/integration/conftest.py).
test-integration: deps
	@$(PY) -m pytest tests/integration -q

# The slowest tests are listed at the end so that the tier's 30-minute budget stays visible.
test: deps
	@$(PY) -m pytest tests -q --durations=15

# The fault suite of issue 9 alone (it is part of the integration tier too), then its table:
# fault, expected, observed, nothing lost, both-down instants, seconds.
faults: deps
	@$(PY) -m pytest tests/integration/test_faults.py -q; status=$$?; \
	  $(PY) -m lab.faults table; exit $$status

# Issue 10's figures (not tests; never part of `make test`): orch.upgrade against the no-Salt
# floor (lab/floor.py), no-op run, downtime, compliance, memory, backup vs cp -a; medians of
# 3 runs (BENCH_RUNS=N, or QUICK=1 for one) to a table and .bench/latest.json. Takes the lab
# lock per round and leaves the lab reset to v1.
bench: deps
	@$(PY) bench/upgrade_bench.py $(if $(QUICK),--quick)

# Issue 11's scale figures (not tests): orch.upgrade on 8, 16 and 32 hosts, batch 1 and 25%,
# each beside the floor; to a table and .bench/scale.json. Ends with the lab back at 8 hosts.
bench-scale: deps
	@$(PY) bench/scale_bench.py $(if $(SIZES),--sizes $(SIZES))

# Issue 11's load-balancer figures: requests lost during orch.upgrade with and without the
# drain/undrain hooks, to .bench/lb.json.
bench-lb: deps
	@$(PY) bench/lb_bench.py

clean: lab-down
	rm -rf .lab
