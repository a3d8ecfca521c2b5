# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(PY) -m cognitionos_kit demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/bench_import.py

clean:
	rm -rf $(VENV) data/demo .pytest_cache
