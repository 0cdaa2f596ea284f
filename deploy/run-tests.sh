#!/usr/bin/env bash
# `make test`: start the services the suite needs (if not already running),
# check style and types, run every test, and stop what this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

started=0
if ! bash deploy/services.sh status --quiet >/dev/null 2>&1; then
    started=1
fi
stop_started() {
    if [ "$started" = 1 ]; then
        echo "== stopping the services this run started"
        bash deploy/services.sh down || true
    fi
}
trap stop_started EXIT

echo "== starting services"
start=$(date +%s)
bash deploy/services.sh up
echo "== services up in $(( $(date +%s) - start )) s"

echo "== lint (ruff, mypy)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy" flows connectors api schemas

echo "== tests"
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
