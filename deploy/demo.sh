#!/usr/bin/env bash
# `make demo`: run the main job on its built-in default (no configuration):
# a seeded simulated plant whose classified readings, events, alarms and
# rollups are printed to stdout. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
echo "== StreamForge demo: python -m bytewax.run flows.ingest (Ctrl-C to stop)"
exec "$VENV/bin/python" -m bytewax.run flows.ingest
