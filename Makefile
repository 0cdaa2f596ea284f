.PHONY: up down status install test lint schemas demo bench soak clean

VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# Local Kafka, TimescaleDB and Mosquitto on 127.0.0.1 (see deploy/README-services.md).
up:
	bash deploy/services.sh up

down:
	bash deploy/services.sh down

status:
	bash deploy/services.sh status

# The virtual environment, rebuilt when pyproject.toml or setup.py changes. The
# editable install builds no extension (STREAMFORGE_PURE_PYTHON=1): setuptools
# would copy them beside the sources, where they shadow an edited .py.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip 'setuptools>=77'
	STREAMFORGE_PURE_PYTHON=1 $(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# The kernels (flows/kernels/) compiled by Cython into build/kernels/ (setup.py);
# only what changed since is rebuilt. Extensions beside the sources (an earlier
# layout's, or a plain `pip install -e .`) are removed: they would shadow the .py.
install: $(VENV)/.installed
	find flows connectors schemas api \( -name '*.so' -o -name '*.c' \) -delete
	$(PY) setup.py --quiet build_kernels

# The whole suite: installs, starts the services it needs, runs lint and every
# test, and stops the services it started.
test: install
	bash deploy/run-tests.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy flows connectors api schemas
	$(VENV)/bin/lint-imports

# Regenerate schemas/json after changing a model.
schemas: install
	$(PY) -m flows.jsonschema

# The main job on its built-in default: a simulated plant, printed to stdout.
demo: install
	bash deploy/demo.sh

# Benchmarks: print figures and write JSON reports under tests/bench/reports/.
bench: install
	bash deploy/run-bench.sh

# The fault soak (not in `make test`): 30 crashes and outages of the flow and the
# services while readings flow, then the database checked against what Kafka took.
soak: install
	bash deploy/services.sh up >/dev/null
	$(PY) -m tests.soak.soak_faults

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
