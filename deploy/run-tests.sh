#!/usr/bin/env bash
# `make test`: start the services the suite needs (if not already running),
# check style and types, run every test, and stop what this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

# Services already running (a developer's `make up`) are left running.
started=1
if [ "$(bash deploy/services.sh status 2>/dev/null | grep -cE '^(kafka|timescale|mosquitto) +running ' || true)" = 3 ]; then
    started=0
fi
# Prometheus is optional: the Prometheus test starts it when it is not running.
prometheus_was_running=0
if bash deploy/services.sh status 2>/dev/null | grep -qE '^prometheus +running '; then
    prometheus_was_running=1
fi
stop_started() {
    if [ "$started" = 1 ]; then
        echo "== stopping the services this run started"
        bash deploy/services.sh down || true
    elif [ "$prometheus_was_running" = 0 ]; then
        bash deploy/services.sh stop prometheus >/dev/null || true
    fi
}
trap stop_started EXIT

echo "== starting services"
start=$(date +%s)
bash deploy/services.sh up
echo "== services up in $(( $(date +%s) - start )) s"
echo "== chromium for the console tests: $(bash deploy/browser.sh)"

echo "== lint (ruff, mypy, import layers)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy" flows connectors api schemas
"$VENV/bin/lint-imports"

echo "== doctests (the examples in the docstrings, run against the .py sources)"
STREAMFORGE_PURE_PYTHON=1 "$VENV/bin/python" -m pytest -p no:cacheprovider -q \
    --doctest-modules flows connectors schemas api

echo "== tests"
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
