.PHONY: up down status install test lint schemas demo bench clean

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

# The virtual environment, rebuilt when pyproject.toml or setup.py changes.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip 'setuptools>=77'
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# The hot modules compiled by Cython (setup.py); rebuilt here when a compiled
# .py or its .pxd changed since (cythonize skips the unchanged ones).
install: $(VENV)/.installed
	$(PY) setup.py --quiet build_ext --inplace

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	rm -f flows/*.c flows/*.so connectors/*.c connectors/*.so schemas/*.c schemas/*.so
