# shellcheck shell=bash
# Mosquitto MQTT broker from Debian, run with our own config (not the
# package's system service). Sourced by deploy/services.sh.
#
# State:  $STREAMFORGE_STATE/mosquitto/{data/mosquitto.db,mosquitto.conf,mosquitto.log}

MQ_DEPLOY_DIR="$DEPLOY_DIR/mosquitto"
MQ_STATE="$STREAMFORGE_STATE/mosquitto"
MQ_DATA="$MQ_STATE/data"
MQ_CONF="$MQ_STATE/mosquitto.conf"
MQ_LOG="$MQ_STATE/mosquitto.log"
MQ_PID="$RUN_DIR/mosquitto.pid"
MQ_HEALTH_TIMEOUT=20

# The Debian package enables a system broker on port 1883 (where an init
# system runs). Ours replaces it, so stop and disable it once per machine.
mq_disable_system_service() {
    local stamp="$STREAMFORGE_CACHE/mosquitto-system-service-disabled"
    [[ -f "$stamp" ]] && return 0
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/mosquitto ]]; then
        if service mosquitto status >/dev/null 2>&1; then
            log "mosquitto: stopping the Debian package's system broker"
            service mosquitto stop >/dev/null 2>&1 || true
        fi
        update-rc.d mosquitto disable >/dev/null 2>&1 || true
    fi
    touch "$stamp"
}

mq_launch() {
    if pidfile_pid "$MQ_PID" mosquitto >/dev/null; then
        return 0
    fi
    mq_disable_system_service
    ensure_port_free "$STREAMFORGE_MQTT_PORT" mosquitto
    mkdir -p "$MQ_DATA"
    render_template "$MQ_DEPLOY_DIR/mosquitto.conf.in" "$MQ_CONF" \
        "PORT=$STREAMFORGE_MQTT_PORT" "DATA_DIR=$MQ_DATA"
    log "mosquitto: starting on 127.0.0.1:$STREAMFORGE_MQTT_PORT"
    spawn_daemon "$MQ_PID" "$MQ_LOG" mosquitto -c "$MQ_CONF"
}

# Healthy = a real publish and subscribe. A retained message avoids the race
# between subscribing and publishing; it is cleared again afterwards.
mq_healthy() {
    local topic="streamforge/health/$$" got
    mosquitto_pub -h 127.0.0.1 -p "$STREAMFORGE_MQTT_PORT" -q 1 -r -t "$topic" -m ok \
        2>/dev/null || return 1
    got=$(mosquitto_sub -h 127.0.0.1 -p "$STREAMFORGE_MQTT_PORT" -t "$topic" -C 1 -W 3 2>/dev/null) || true
    mosquitto_pub -h 127.0.0.1 -p "$STREAMFORGE_MQTT_PORT" -q 1 -r -n -t "$topic" 2>/dev/null || true
    [[ "$got" == ok ]]
}

mq_wait() {
    wait_healthy "$MQ_HEALTH_TIMEOUT" "$MQ_PID" mq_healthy && return 0
    show_log_tail "$MQ_LOG"
    die "mosquitto: no publish/subscribe round trip on 127.0.0.1:$STREAMFORGE_MQTT_PORT within ${MQ_HEALTH_TIMEOUT}s"
}

mq_stop() {
    local pid
    pid=$(pidfile_pid "$MQ_PID" mosquitto) || { rm -f "$MQ_PID"; return 0; }
    log "mosquitto: stopping (pid $pid)"
    # TERM makes mosquitto save its persistence file before exiting.
    stop_pid "$pid" 30 mosquitto || true
    rm -f "$MQ_PID"
}

# Crash it (fault tests): SIGKILL, no persistence saved on the way out.
mq_kill() {
    local pid
    pid=$(pidfile_pid "$MQ_PID" mosquitto) || { log "mosquitto: not running"; return 0; }
    log "mosquitto: killing (SIGKILL, pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 30
}

mq_status() {
    local pid state=stopped
    if pid=$(pidfile_pid "$MQ_PID" mosquitto); then
        state=running
        mq_healthy || state=unhealthy
    else
        pid=-
    fi
    print_status_line mosquitto "$state" "$pid" "$STREAMFORGE_MQTT_PORT" "$MQ_LOG"
}
