#!/usr/bin/env bash
# `make bench`: every benchmark under tests/bench/, one after another (they
# share 2 cores; running them together would measure the contention). Each
# prints its figures and writes tests/bench/reports/<name>.json. Pass names
# to run only some: `bash deploy/run-bench.sh pipeline kafka`.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
bash deploy/services.sh up >/dev/null || exit 1
"$VENV/bin/python" -m connectors.timescale.migrate >/dev/null || exit 1

all=(pipeline operators decode_alarms simulator timescale kafka mqtt gateway modbus opcua end_to_end api api_queries detectors alarm_kpis state_churn restart)
names=("${@:-${all[@]}}")
failed=()
for name in "${names[@]}"; do
    module="tests.bench.bench_$name"
    [ -f "tests/bench/bench_$name.py" ] || { echo "== no benchmark $name"; continue; }
    echo "== $module"
    start=$(date +%s)
    if ! "$VENV/bin/python" -m "$module"; then
        failed+=("$name")
    fi
    echo "== $module took $(( $(date +%s) - start )) s"
done
echo "== detector evaluation (tests.bench.eval_detector)"
[ $# -gt 0 ] || "$VENV/bin/python" -m tests.bench.eval_detector || failed+=(eval_detector)
if [ ${#failed[@]} -gt 0 ]; then
    echo "== failed: ${failed[*]}"
    exit 1
fi
echo "== reports in tests/bench/reports/"
