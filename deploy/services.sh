#!/usr/bin/env bash
# Local services for StreamForge without Docker: Apache Kafka (KRaft, from
# Maven Central jars), TimescaleDB (PostgreSQL 17 in a Debian trixie
# debootstrap root) and Mosquitto (Debian package), all on 127.0.0.1; and,
# optionally, Prometheus (Debian package): `start prometheus`.
#
# Usage: deploy/services.sh up | down | status | reset
#        deploy/services.sh start|stop|restart|kill kafka|timescale|mosquitto
#
#   up       start whatever is not running, wait until each passes a real
#            health check (kcat metadata, psql as the app user, MQTT pub/sub);
#            a no-op when everything is already up
#   down     stop everything (TERM, then KILL), unmount, remove pid files
#   status   one line per service; always exits 0
#   reset    down, then delete the runtime state (data, logs); caches stay
#   kill     crash one service with SIGKILL (fault tests); `start` brings it back
#
# Downloads and the trixie root are cached in $STREAMFORGE_CACHE
# (~/.cache/streamforge), outside the clone, so a fresh clone starts in
# seconds; data, logs and pid files live in $STREAMFORGE_STATE. All settings
# are listed in deploy/README-services.md and deploy/lib/common.sh.
set -Eeuo pipefail
# Never fail silently: name the command that broke set -e.
trap 'printf "[services] ERROR: unexpected failure at %s:%s: %s\n" "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND" >&2' ERR

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/lib/common.sh
source "$DEPLOY_DIR/lib/common.sh"
# shellcheck source=deploy/kafka/kafka.sh
source "$DEPLOY_DIR/kafka/kafka.sh"
# shellcheck source=deploy/timescale/timescale.sh
source "$DEPLOY_DIR/timescale/timescale.sh"
# shellcheck source=deploy/mosquitto/mosquitto.sh
source "$DEPLOY_DIR/mosquitto/mosquitto.sh"
# shellcheck source=deploy/prometheus/prometheus.sh
source "$DEPLOY_DIR/prometheus/prometheus.sh"

ALL_SERVICES=(kafka timescale mosquitto)
# Started only on request (`start prometheus`); `down` stops them too.
OPTIONAL_SERVICES=(prometheus)

usage() {
    sed -n '6,7p' "${BASH_SOURCE[0]}" | sed 's/^# //' >&2
    exit 2
}

# Set SERVICE from a name given on the command line; the docker-compose
# names work too.
resolve_service() {
    case "${1:-}" in
        kafka) SERVICE=kafka ;;
        timescale | timescaledb | postgres | db) SERVICE=timescale ;;
        mosquitto | mqtt) SERVICE=mosquitto ;;
        prometheus) SERVICE=prometheus ;;
        *) die "unknown service '${1:-}' (expected one of: ${ALL_SERVICES[*]} ${OPTIONAL_SERVICES[*]})" ;;
    esac
}

# Per-service dispatch: svc ACTION SERVICE, where ACTION is one of
# launch (start, don't wait), wait (block until healthy), stop, kill, status.
svc() {
    local prefix
    case "$2" in kafka) prefix=kafka ;; timescale) prefix=ts ;; mosquitto) prefix=mq ;; prometheus) prefix=pm ;; esac
    "${prefix}_$1"
}

# Everything the services need on the host (installed only when missing).
prepare_host() {
    require_up_prerequisites
    mkdir -p "$STREAMFORGE_CACHE" "$RUN_DIR"
    take_lock
    ensure_packages mosquitto mosquitto-clients kcat
}

# Launch all requested services first, then wait for them: Kafka's JVM warms
# up while PostgreSQL and Mosquitto start, which keeps a warm `up` short.
start_services() {
    local s
    for s in "$@"; do svc launch "$s"; done
    for s in "$@"; do svc wait "$s"; done
}

stop_services() {
    local s
    for s in "$@"; do svc stop "$s"; done
}

print_status() {
    local s
    for s in "${ALL_SERVICES[@]}"; do svc status "$s"; done
    # An optional service has a line only while it runs.
    pidfile_pid "$PM_PID" prometheus >/dev/null && svc status prometheus
    return 0
}

print_connection_hints() {
    cat <<EOF

Application settings for these services (the defaults, unless a port was changed):
  STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$STREAMFORGE_KAFKA_PORT
  STREAMFORGE_DATABASE_URL=postgresql://$STREAMFORGE_DB_USER:***@127.0.0.1:$STREAMFORGE_DB_PORT/$STREAMFORGE_DB_NAME
  STREAMFORGE_MQTT_URL=mqtt://127.0.0.1:$STREAMFORGE_MQTT_PORT
Kafka JVM output: $KAFKA_OUT
State: $STREAMFORGE_STATE   Cache: $STREAMFORGE_CACHE
EOF
}

cmd_up() {
    local t0=$SECONDS
    prepare_host
    start_services "${ALL_SERVICES[@]}"
    print_status
    print_connection_hints
    log "all services up in $((SECONDS - t0))s"
}

cmd_down() {
    require_root
    take_lock
    stop_services "${ALL_SERVICES[@]}" "${OPTIONAL_SERVICES[@]}"
    log "all services stopped"
}

# Wipe runtime state (data, logs, pid files), keeping the download caches.
cmd_reset() {
    cmd_down
    local state
    state=$(realpath -m "$STREAMFORGE_STATE")
    case "$state" in
        / | "$HOME" | "$(realpath -m "$STREAMFORGE_CACHE")")
            die "refusing to delete STREAMFORGE_STATE=$state" ;;
    esac
    # The data dir must no longer be mounted in the root (ts_stop unmounts it).
    ! mountpoint -q "$TS_MOUNT" || die "$TS_MOUNT is still mounted; not deleting $state"
    log "deleting runtime state in $state"
    rm -rf --one-file-system "$state"
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) print_status ;;
        reset) cmd_reset ;;
        kill)
            [[ $# -eq 2 ]] || usage
            resolve_service "$2"
            require_root
            take_lock
            svc kill "$SERVICE"
            ;;
        start | stop | restart)
            [[ $# -eq 2 ]] || usage
            resolve_service "$2"
            if [[ "$cmd" == stop ]]; then
                require_root
                take_lock
            else
                prepare_host
            fi
            [[ "$cmd" == start ]] || stop_services "$SERVICE"
            [[ "$cmd" == stop ]] || { start_services "$SERVICE"; svc status "$SERVICE"; }
            ;;
        *) usage ;;
    esac
}

main "$@"
