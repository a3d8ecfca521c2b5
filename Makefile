# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo lab lint test test-local-model bench notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# running a notebook and saving it leaves git clean: outputs that change per run are not stored
	@! git rev-parse --git-dir >/dev/null 2>&1 || git config filter.notebook-clean.clean '$(abspath $(PY)) tools/clean_notebook.py'
	@touch $(STAMP)

demo: setup
	$(PY) -m cognitionos_kit demo

# Open the numbered notebooks in JupyterLab (the third command in the README).
lab: setup
	$(VENV)/bin/jupyter lab notebooks/

# Tests run offline whatever the shell holds: no keys, no base URLs, no .env.
OFFLINE := env -u OPENAI_API_KEY -u ANTHROPIC_API_KEY -u OPENAI_API_KEYS -u ANTHROPIC_API_KEYS -u OPENAI_BASE_URL -u ANTHROPIC_BASE_URL COGNITIONOS_DOTENV=0

# Lint, layers and types: a lint error, an import that climbs a layer or a type error fails `make test`.
lint: setup
	$(VENV)/bin/ruff check cognitionos_kit tests tests_local_model benchmarks tools
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

# Two pytest processes side by side (see tools/run_tests.sh); either failing fails make test.
test: setup lint
	sh tools/ensure_system_packages.sh
	$(OFFLINE) sh tools/run_tests.sh $(PY)

# A real local model, end to end (not part of `make test`): llama-cpp-python's server with
# SmolLM2-135M on this CPU, built into .local-model/ the first time (about 5 minutes; see
# tools/local_model.sh), then complete, stream, an experiment, the playground and %%llm against it.
test-local-model: setup
	$(OFFLINE) $(PY) -m pytest -p no:cacheprovider -o addopts="-ra" tests_local_model

notebooks: setup
	$(OFFLINE) $(PY) tools/refresh_notebooks.py

bench: setup
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/bench_import.py
	$(PY) benchmarks/bench_experiment.py

clean:
	rm -rf $(VENV) data/demo .pytest_cache .local-model
