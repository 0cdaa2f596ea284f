#!/usr/bin/env bash
# `make demo`: the whole product on this machine, in the split topology.
# Starts Kafka, TimescaleDB and Mosquitto (deploy/services.sh), applies the
# database migrations, then runs an edge gateway (`python -m bytewax.run
# flows.gateway`: a simulated plant and MQTT devices -> a spool on disk -> the
# raw Kafka topic) and the processing flow (`python -m bytewax.run
# flows.ingest`, two processes: raw topic -> Kafka topics and TimescaleDB),
# both on deploy/pipeline.demo.yaml, with alarms and events printed here, and
# the REST API (uvicorn api.main:app) beside them.
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
# detectors and source positions); one store per pipeline config and topology,
# since a store only resumes the flow it was made for (Bytewax stops with a
# panic on a store of another shape of flow).
STATE=${STREAMFORGE_STATE:-$HOME/.cache/streamforge/state}
TOPOLOGY=$("$PY" -c 'from flows.config import load_pipeline_config; print(load_pipeline_config().topology)')
RECOVERY=${STREAMFORGE_DEMO_RECOVERY:-$STATE/demo-recovery/$(basename "$STREAMFORGE_CONFIG" .yaml)-$TOPOLOGY}
# The gateway's store-and-forward spool (with topology: split): what it
# collected while Kafka was away, forwarded when it is back.
SPOOL=${STREAMFORGE_DEMO_SPOOL:-$STATE/demo-spool/$(basename "$STREAMFORGE_CONFIG" .yaml)}

echo "== starting services"
bash deploy/services.sh up >/dev/null
echo "== applying database migrations"
"$PY" -m connectors.timescale.migrate --database-url "$DB_URL"
echo "== recovery store"
"$PY" -m flows.recovery "$RECOVERY" 2
API_PORT=${STREAMFORGE_DEMO_API_PORT:-8000}
KEY=$("$PY" -m api.keys create --tenant default --role admin --name "demo-$(date +%s)" 2>/dev/null | head -1)

cat <<INFO

== StreamForge demo ($TOPOLOGY topology): $( [ "$TOPOLOGY" = split ] && echo "flows.gateway -> Kafka -> " )flows.ingest (2 processes), config $STREAMFORGE_CONFIG
   See the data while it runs (in another terminal):
     psql $DB_URL -c "SELECT device, metric, tier, window_start, count, round(mean::numeric, 2) AS mean FROM rollups ORDER BY window_start DESC LIMIT 10"
     kcat -b $KAFKA -C -t streamforge.alarms -o beginning -f '%k %s\n'
     $PY -m connectors.kafka.alerts --from-beginning
     curl -H 'X-API-Key: $KEY' 'http://127.0.0.1:$API_PORT/alarms?state=active'
     curl -H 'X-API-Key: $KEY' 'http://127.0.0.1:$API_PORT/devices'
   Console: http://127.0.0.1:$API_PORT/  (log in with the key $KEY)
   Flow metrics: http://127.0.0.1:${STREAMFORGE_METRICS_PORT:-9400}/metrics, the next port for process 1 (/health too)
   Gateway metrics (spool size, oldest record, forward rate): http://127.0.0.1:${STREAMFORGE_DEMO_GATEWAY_METRICS_PORT:-9410}/metrics
   Publish to the gateway: mosquitto_pub -q 1 -t plant/press-1/temperature -m 71.5
   (REST API on http://127.0.0.1:$API_PORT, docs at /docs; that key is an admin key of tenant "default")
   Ctrl-C stops the flow (the services keep running; \`make down\` stops them).

INFO

# The API and the flow processes run in sessions of their own (setsid), so a
# Ctrl-C in this terminal reaches only this script, which then signals each of
# them exactly once: a second signal makes uvicorn and Bytewax abandon their
# clean shutdown (the API's lifespan was cancelled mid-close by one).
pids=()
# The console's pipeline page reads the gateway's metrics here.
export STREAMFORGE_CONSOLE_GATEWAY_TARGETS=${STREAMFORGE_CONSOLE_GATEWAY_TARGETS:-127.0.0.1:${STREAMFORGE_DEMO_GATEWAY_METRICS_PORT:-9410}}
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

if [ "$TOPOLOGY" = split ]; then
    (
        trap - INT
        export STREAMFORGE_PIPELINE__GATEWAY__SPOOL__PATH="$SPOOL"
        export STREAMFORGE_METRICS_PORT=${STREAMFORGE_DEMO_GATEWAY_METRICS_PORT:-9410}
        export STREAMFORGE_PIPELINE__GATEWAY__ID=${STREAMFORGE_PIPELINE__GATEWAY__ID:-demo-gateway}
        exec setsid "$PY" -m bytewax.run flows.gateway -s 1
    ) &
    pids+=($!)
fi

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
