# halizard: the two commands that do everything are `make demo` and `make test`.
#
# `make` bootstraps two virtual environments: .venv (the newest Python here: pyenv's 3.13.0 when
# it is installed, else the machine's python3) for development and the full test suite, and
# .venv36 (pyenv's 3.6.15, the Python of the XCP-ng 8.3 / XenServer 8 dom0) for the runtime
# tests. Debian packages a step needs are installed here too, so a fresh machine needs nothing
# else. `make rpm` builds the dom0 package (packaging/halizard.spec) into build/rpm/.

PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13.0/bin/python3.13) python3)
PYTHON36 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.6.15/bin/python3.6) \
                        $(shell command -v python3.6 2>/dev/null))
VENV := .venv
VENV36 := .venv36
PY := $(VENV)/bin/python
PY36 := $(VENV36)/bin/python
REPORT ?= build/report
SEEDS ?= 20
# rpm: rpmbuild for `make rpm`, and rpm itself for the package test (tests/test_rpm.py).
DEBIAN_PACKAGES := openssl gcc libsystemd-dev pkg-config rpm
# .venv is made again when PYTHON is another version than the one it was made with.
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
VENV_VERSION := $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)

.PHONY: all demo test lint typecheck unit matrix test36 bench bench-lab explore clean \
        debian-packages rpm venv-python

all: test

# Always out of date: makes .venv again when PYTHON is another version.
venv-python:

debian-packages:
	@if [ -n "$(DEBIAN_PACKAGES)" ]; then \
	  missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -q && apt-get install -y -q $$missing; fi; \
	fi

$(VENV)/.stamp: requirements/dev.txt requirements/runtime.txt \
                $(if $(filter $(PYTHON_VERSION),$(VENV_VERSION)),,venv-python) | debian-packages
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $@

$(VENV36)/.stamp: requirements/test-py36.txt requirements/runtime-py36.txt | debian-packages
	@if [ -z "$(PYTHON36)" ]; then \
	  echo "Python 3.6 not found: install pyenv's 3.6.15 or set PYTHON36=/path/to/python3.6" >&2; \
	  exit 1; fi
	$(PYTHON36) -m venv $(VENV36)
	$(PY36) -m pip install -q --upgrade 'pip<22'
	$(PY36) -m pip install -q -r requirements/test-py36.txt
	touch $@

demo: $(VENV)/.stamp
	$(PY) -m halizard simulate --seeds $(SEEDS) --report $(REPORT)
	@echo
	@echo "Report written to $(abspath $(REPORT))/index.html"

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check halizard simulations tests packaging/halizard

typecheck: $(VENV)/.stamp
	$(VENV)/bin/mypy

# debian-packages on each run too: the package test (tests/test_rpm.py) needs rpm and rpmbuild
# even where the environments were made before rpm joined the list.
# The two-host lab's end-to-end tests (marker lab: minutes of real time, the CPU mostly idle)
# run once, in test36, on the interpreter the daemons run on in dom0; every other runtime test
# runs on both. `make unit LAB=1` runs them here too.
unit: $(VENV)/.stamp debian-packages
	$(PY) -m pytest -q $(if $(LAB),,-m "not lab")

test36: $(VENV36)/.stamp debian-packages
	$(PY36) -m pytest -q -m "runtime" -p no:cacheprovider
	$(PY36) -m halizard simulate --seeds 2

test: lint typecheck unit test36

# The dom0 package: build/rpm/halizard-VERSION-1.noarch.rpm (packaging/halizard.spec; the
# dependencies pinned for Python 3.6 are fetched from the package registry). About 4 s
# (BENCHMARKS.md, "The dom0 package").
rpm: $(VENV36)/.stamp debian-packages
	packaging/build-rpm build/rpm $(PY36) $(PY36)

bench: $(VENV)/.stamp
	$(PY) -m simulations.bench

# Failover times in the two-host lab (root; about 20 minutes): BENCHMARKS.md, "In the lab".
bench-lab: $(VENV)/.stamp
	$(PY) -m simulations.lab bench --runs 5

# The long run (the test suite replays fixed schedules): COUNT seeded random fault schedules on
# JOBS cores, half with a fence agent and half without (schedule i of SEED is always the same),
# then the Hypothesis properties and the state machine on EXAMPLES fresh examples each. Each
# step runs even if an earlier one failed. The first failure of each is shrunk, printed as a
# scenario file with its seed and replay command, and saved as the next Rnnn in
# simulations/regressions/, which the matrix runs forever. About 30 minutes on two cores.
COUNT ?= 100000
SEED ?= 0
JOBS ?= $(shell nproc)
EXAMPLES ?= 2000
explore: $(VENV)/.stamp
	@status=0; \
	HALIZARD_EXPLORE=1 $(PY) -m halizard simulate --explore random --config-variant fence-agent \
	  --count $$(( $(COUNT) / 2 )) --seed $(SEED) --jobs $(JOBS) || status=1; \
	HALIZARD_EXPLORE=1 $(PY) -m halizard simulate --explore random --config-variant gateway-only \
	  --count $$(( $(COUNT) - $(COUNT) / 2 )) --seed $(SEED) --jobs $(JOBS) || status=1; \
	HALIZARD_EXPLORE=1 HALIZARD_PROPERTY_EXAMPLES=$(EXAMPLES) HALIZARD_STATEFUL_EXAMPLES=$(EXAMPLES) \
	  $(PY) -m pytest -q -p no:cacheprovider tests/test_properties.py tests/test_explore.py \
	  || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) $(VENV36) build .pytest_cache .mypy_cache .ruff_cache
