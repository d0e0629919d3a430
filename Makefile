# Quick start: `make demo` (train on generated data) and `make test` (the test suite).
# Both install everything into $(VENV) first; the install runs again only when
# setup.py or tools/install.sh change (or the venv is removed).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.tst_mm-installed
PYTEST_ARGS ?=
# Two test processes of one torch thread each: most tests are small models and tools
# run in subprocesses, which one thread serves as well as two, so two at a time use
# both cores (measured in docs/benchmarks.md, "The test suite"). Override either, e.g.
# `make test PYTEST_WORKERS=0` for one process, `OMP_NUM_THREADS=2 make test`.
PYTEST_WORKERS ?= 2

.PHONY: install demo test zoo-coverage clean-demo

install: $(STAMP)

$(STAMP): setup.py tools/install.sh
	bash tools/install.sh $(VENV)
	@touch $@

demo: install
	$(PYTHON) tools/demo.py

test: export OMP_NUM_THREADS ?= 1
test: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PYTHON) -m pytest tests -n $(PYTEST_WORKERS) \
		--dist loadgroup --durations=15 $(PYTEST_ARGS)

zoo-coverage: install
	$(PYTHON) tools/zoo_coverage.py

# The demo's runs are the study's (seed 0): this removes both.
clean-demo:
	rm -rf work_dirs/study data/study
