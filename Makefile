# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_STAMP := $(VENV)/.lint-installed
HOOKS_STAMP := $(VENV)/.hooks-installed
# the linters and what they pull in, pinned (pyproject's `dev` extra; not in requirements.lock, which is
# what `make test` installs); -c requirements.lock keeps the packages they share with it at its versions
LINT_PINS := ruff==0.17.6 mypy==2.4.1 mypy_extensions==1.2.0 pathspec==1.1.1 librt==0.17.0 ast_serialize==0.13.1
HOOK_PINS := pre-commit==4.7.0 cfgv==3.5.0 identify==2.6.20 nodeenv==1.12.0 virtualenv==21.15.11 distlib==0.4.4 \
	python-discovery==1.9.6

.PHONY: help demo test bench bench-gpu lint format hooks install clean

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c requirements.lock $(LINT_PINS)
	touch $(LINT_STAMP)

$(HOOKS_STAMP): $(LINT_STAMP)
	$(PY) -m pip install --quiet -c requirements.lock $(HOOK_PINS)
	touch $(HOOKS_STAMP)

install: $(STAMP)  ## create .venv with the pinned environment and the package (editable)

demo: $(STAMP)  ## the main job on the embedded demo data (about 2 minutes on 2 cores)
	$(PY) -m dear_exp

test: $(STAMP)  ## the whole test suite, two workers
	$(PY) -m pytest -n 2 --dist loadgroup

bench: $(STAMP)  ## speed, CPU time and memory, measured end to end (experiments/throughput)
	$(PY) -m dear_exp.bench $(ARGS)

bench-gpu: $(STAMP)  ## the GPU checks: bf16 vs fp32, images/s per detector, sweep ratio, fp16 inpainting
	$(PY) -m dear_exp.bench_gpu $(ARGS)

lint: $(LINT_STAMP)  ## ruff (lint + format check) on src, tests and experiments, mypy on the stage modules
	$(VENV)/bin/ruff check src tests experiments
	$(VENV)/bin/ruff format --check src tests experiments
	$(VENV)/bin/mypy

format: $(LINT_STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests experiments
	$(VENV)/bin/ruff format src tests experiments

hooks: $(HOOKS_STAMP)  ## install the pre-commit hooks (ruff check + format, mypy; local, from .venv)
	$(VENV)/bin/pre-commit install

clean:  ## remove the caches and logs of runs (not .venv)
	rm -rf .cache logs
