#!/usr/bin/env bash
# `make demo`: the whole product on this machine. Starts Kafka, TimescaleDB and
# Mosquitto (deploy/services.sh), applies the database migrations, then runs
# `python -m bytewax.run flows.ingest` as two processes on a simulated plant
# (deploy/pipeline.demo.yaml) writing to Kafka and TimescaleDB, with alarms
# and events printed here, and the REST API (uvicorn api.main:app) beside it.
# Ctrl-C stops the flow and the API; `make down` the services. The flows run
# with a recovery store (created on the first run): the next `make demo`
# resumes where this one stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
export STREAMFORGE_CONFIG=${STREAMFORGE_CONFIG:-deploy/pipeline.demo.yaml}
DB_URL=${STREAMFORGE_DATABASE_URL:-postgresql://streamforge:streamforge@127.0.0.1:5433/streamforge}
KAFKA=${STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
BASE_PORT=${STREAMFORGE_DEMO_PORT:-2101}
# The flows resume from here after a crash or a Ctrl-C (alarms, windows,
# detectors and source positions); one store per pipeline config, since a
# store only resumes the flow it was made for.
STATE=${STREAMFORGE_STATE:-$HOME/.cache/streamforge/state}
RECOVERY=${STREAMFORGE_DEMO_RECOVERY:-$STATE/demo-recovery/$(basename "$STREAMFORGE_CONFIG" .yaml)}

echo "== starting services"
bash deploy/services.sh up >/dev/null
echo "== applying database migrations"
"$PY" -m connectors.timescale.migrate --database-url "$DB_URL"
echo "== recovery store"
"$PY" -m flows.recovery "$RECOVERY" 2
API_PORT=${STREAMFORGE_DEMO_API_PORT:-8000}
KEY=$("$PY" -m api.keys create --tenant default --role admin --name "demo-$(date +%s)" 2>/dev/null | head -1)

cat <<INFO

== StreamForge demo: flows.ingest, 2 processes, config $STREAMFORGE_CONFIG
   See the data while it runs (in another terminal):
     psql $DB_URL -c "SELECT device, metric, tier, window_start, count, round(mean::numeric, 2) AS mean FROM rollups ORDER BY window_start DESC LIMIT 10"
     kcat -b $KAFKA -C -t streamforge.alarms -o beginning -f '%k %s\n'
     $PY -m connectors.kafka.alerts --from-beginning
     curl -H 'X-API-Key: $KEY' 'http://127.0.0.1:$API_PORT/alarms?state=active'
     curl -H 'X-API-Key: $KEY' 'http://127.0.0.1:$API_PORT/devices'
   Console: http://127.0.0.1:$API_PORT/  (log in with the key $KEY)
   Flow metrics: http://127.0.0.1:${STREAMFORGE_METRICS_PORT:-9400}/metrics, the next port for process 1 (/health too)
   (REST API on http://127.0.0.1:$API_PORT, docs at /docs; that key is an admin key of tenant "default")
   Ctrl-C stops the flow (the services keep running; \`make down\` stops them).

INFO

# The API and the flow processes run in sessions of their own (setsid), so a
# Ctrl-C in this terminal reaches only this script, which then signals each of
# them exactly once: a second signal makes uvicorn and Bytewax abandon their
# clean shutdown (the API's lifespan was cancelled mid-close by one).
pids=()
setsid "$VENV/bin/uvicorn" api.main:app --host 127.0.0.1 --port "$API_PORT" --log-level warning &
pids+=($!)
stop() {
    trap - INT TERM
    echo
    echo "== stopping the flow and the API"
    kill -INT "${pids[@]}" 2>/dev/null || true
    # Up to 20 s to exit (the flows stop within ~1 s; with recovery, -r, a
    # restart replays whatever they had not written, into idempotent sinks),
    # then TERM whatever is left.
    for _ in $(seq 1 40); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.5
    done
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    echo "== stopped"
    exit 0
}
trap stop INT TERM

# One -a with every process's address, separated by semicolons.
addresses="127.0.0.1:$BASE_PORT;127.0.0.1:$((BASE_PORT + 1))"
for i in 0 1; do
    # A script's background commands start with SIGINT ignored, and Python
    # keeps an ignored SIGINT ignored: reset it, or the INT sent by stop()
    # would not reach the flow (uvicorn installs its own handler).
    (
        trap - INT
        exec setsid "$PY" -m bytewax.run flows.ingest -i "$i" -a "$addresses" \
            -r "$RECOVERY" -s 5 -b 0
    ) &
    pids+=($!)
done
wait "${pids[@]}"
