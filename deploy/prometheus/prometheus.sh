# shellcheck shell=bash
# Prometheus from Debian (`prometheus` package), run with our own config, not
# the package's system service. Optional: `deploy/services.sh start prometheus`
# (the Prometheus tests run it themselves); `up` does not start it. Sourced by
# deploy/services.sh.
#
# State:  $STREAMFORGE_STATE/prometheus/{data/,targets/*.json,prometheus.yml,prometheus.log}
# Scrapes every target listed in targets/*.json (file service discovery):
# targets/local.json names the API (8000) and flow processes 0-3
# (STREAMFORGE_METRICS_PORT, default 9400, plus the process id).

# Debian bookworm's prometheus package; docker-compose.yml runs the same version
# (tests/unit/test_grafana_provisioning.py checks they agree).
PM_DEBIAN_VERSION=2.42.0
STREAMFORGE_PROMETHEUS_PORT="${STREAMFORGE_PROMETHEUS_PORT:-9090}"
STREAMFORGE_PROMETHEUS_SCRAPE_INTERVAL="${STREAMFORGE_PROMETHEUS_SCRAPE_INTERVAL:-2s}"
STREAMFORGE_METRICS_PORT="${STREAMFORGE_METRICS_PORT:-9400}"   # flow process 0; N serves +N
STREAMFORGE_API_PORT="${STREAMFORGE_API_PORT:-8000}"

PM_DEPLOY_DIR="$DEPLOY_DIR/prometheus"
PM_STATE="$STREAMFORGE_STATE/prometheus"
PM_DATA="$PM_STATE/data"
PM_TARGETS="$PM_STATE/targets"
PM_CONF="$PM_STATE/prometheus.yml"
PM_LOG="$PM_STATE/prometheus.log"
PM_PID="$RUN_DIR/prometheus.pid"
PM_HEALTH_TIMEOUT=30

# The Debian package enables a system Prometheus on 9090 (and its own
# storage under /var/lib); ours replaces it, once per machine.
pm_disable_system_service() {
    local stamp="$STREAMFORGE_CACHE/prometheus-system-service-disabled"
    [[ -f "$stamp" ]] && return 0
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/prometheus ]]; then
        service prometheus stop >/dev/null 2>&1 || true
        update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
    touch "$stamp"
}

pm_write_local_targets() {
    local flow_port="$STREAMFORGE_METRICS_PORT"
    cat >"$PM_TARGETS/local.json.tmp" <<JSON
[
  {"targets": ["127.0.0.1:$STREAMFORGE_API_PORT"], "labels": {"component": "api"}},
  {"targets": ["127.0.0.1:$flow_port", "127.0.0.1:$((flow_port + 1))",
               "127.0.0.1:$((flow_port + 2))", "127.0.0.1:$((flow_port + 3))"],
   "labels": {"component": "flow"}}
]
JSON
    mv "$PM_TARGETS/local.json.tmp" "$PM_TARGETS/local.json"
}

pm_launch() {
    if pidfile_pid "$PM_PID" prometheus >/dev/null; then
        return 0
    fi
    ensure_packages prometheus
    prometheus --version 2>&1 | grep -q "version $PM_DEBIAN_VERSION" ||
        warn "prometheus is not version $PM_DEBIAN_VERSION (docker-compose.yml's): $(prometheus --version 2>&1 | head -n 1)"
    pm_disable_system_service
    ensure_port_free "$STREAMFORGE_PROMETHEUS_PORT" prometheus
    mkdir -p "$PM_DATA" "$PM_TARGETS"
    render_template "$PM_DEPLOY_DIR/prometheus.yml.in" "$PM_CONF" \
        "SCRAPE_INTERVAL=$STREAMFORGE_PROMETHEUS_SCRAPE_INTERVAL" \
        "SCRAPE_TIMEOUT=$STREAMFORGE_PROMETHEUS_SCRAPE_INTERVAL" \
        "TARGETS_DIR=$PM_TARGETS"
    pm_write_local_targets
    log "prometheus: starting on 127.0.0.1:$STREAMFORGE_PROMETHEUS_PORT"
    spawn_daemon "$PM_PID" "$PM_LOG" prometheus \
        --config.file="$PM_CONF" \
        --storage.tsdb.path="$PM_DATA" \
        --storage.tsdb.retention.time=2d \
        --web.listen-address="127.0.0.1:$STREAMFORGE_PROMETHEUS_PORT" \
        --web.enable-lifecycle
}

pm_healthy() {
    curl -fsS -m 2 "http://127.0.0.1:$STREAMFORGE_PROMETHEUS_PORT/-/ready" >/dev/null 2>&1
}

pm_wait() {
    wait_healthy "$PM_HEALTH_TIMEOUT" "$PM_PID" pm_healthy && return 0
    show_log_tail "$PM_LOG"
    die "prometheus: not ready on 127.0.0.1:$STREAMFORGE_PROMETHEUS_PORT within ${PM_HEALTH_TIMEOUT}s"
}

pm_stop() {
    local pid
    pid=$(pidfile_pid "$PM_PID" prometheus) || { rm -f "$PM_PID"; return 0; }
    log "prometheus: stopping (pid $pid)"
    stop_pid "$pid" 30 prometheus || true
    rm -f "$PM_PID"
}

pm_kill() {
    local pid
    pid=$(pidfile_pid "$PM_PID" prometheus) || { log "prometheus: not running"; return 0; }
    log "prometheus: killing (SIGKILL, pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 30
}

pm_status() {
    local pid state=stopped
    if pid=$(pidfile_pid "$PM_PID" prometheus); then
        state=running
        pm_healthy || state=unhealthy
    else
        pid=-
    fi
    print_status_line prometheus "$state" "$pid" "$STREAMFORGE_PROMETHEUS_PORT" "$PM_LOG"
}
