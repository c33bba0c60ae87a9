# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m dear_exp

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup

# the feature cache's speed goals, measured end to end (a few minutes on the demo data)
bench: $(STAMP)
	$(PY) -m dear_exp.bench $(ARGS)

clean:
	rm -rf .cache logs
