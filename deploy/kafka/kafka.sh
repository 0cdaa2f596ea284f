# shellcheck shell=bash
# Apache Kafka 4.x, single-node KRaft, from Maven Central jars.
# Sourced by deploy/services.sh after deploy/lib/common.sh.
#
# Cache:  $STREAMFORGE_CACHE/kafka-<version>/libs      (jars, fetched once)
# State:  $STREAMFORGE_STATE/kafka/{data,logs,server.properties,cluster.id}

KAFKA_DEPLOY_DIR="$DEPLOY_DIR/kafka"
# Single source of truth for the version: the pom.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_DEPLOY_DIR/pom.xml")
KAFKA_HOME="$STREAMFORGE_CACHE/kafka-$KAFKA_VERSION"
KAFKA_STATE="$STREAMFORGE_STATE/kafka"
KAFKA_DATA="$KAFKA_STATE/data"
KAFKA_LOGS="$KAFKA_STATE/logs"
KAFKA_OUT="$KAFKA_LOGS/kafka.out"        # JVM stdout/stderr (warnings, crashes)
KAFKA_SERVER_LOG="$KAFKA_LOGS/server.log" # full broker log (log4j2)
KAFKA_PROPS="$KAFKA_STATE/server.properties"
KAFKA_PID="$RUN_DIR/kafka.pid"
KAFKA_HEALTH_TIMEOUT=90

# Class-data-sharing archive of the broker's classes, one per JVM build: it
# cuts JVM start-up by roughly a third, which is most of a warm `up`. The
# first run records it when the broker exits, later runs map it.
kafka_cds_path() {
    local java_home version
    java_home=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
    version=$(sed -n 's/^JAVA_RUNTIME_VERSION="\(.*\)"/\1/p' "$java_home/release" 2>/dev/null || true)
    echo "$KAFKA_HOME/cds-${version//[^A-Za-z0-9.]/_}.jsa"
}

# Where this state's broker records the archive (instances sharing the cache
# must not write the same file).
kafka_cds_partial() {
    echo "$1.$(cksum <<<"$KAFKA_STATE" | cut -d' ' -f1).partial"
}

# Copy the broker jars from Maven Central (via ~/.m2) into the cache. The
# pom's checksum is stored next to them, so editing the pom refetches.
kafka_fetch() {
    local stamp="$KAFKA_HOME/pom.sha256" want
    want=$(sha256sum <"$KAFKA_DEPLOY_DIR/pom.xml" | cut -d' ' -f1)
    [[ -d "$KAFKA_HOME/libs" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]] && return 0
    log "kafka: fetching Kafka $KAFKA_VERSION jars from Maven Central (first run only)"
    mkdir -p "$KAFKA_HOME"
    rm -rf "$KAFKA_HOME/libs.partial"
    mvn -q -B -f "$KAFKA_DEPLOY_DIR/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs.partial" \
        >"$KAFKA_HOME/mvn.log" 2>&1 ||
        { show_log_tail "$KAFKA_HOME/mvn.log"; die "kafka: mvn could not fetch the broker jars"; }
    rm -rf "$KAFKA_HOME/libs" "$KAFKA_HOME"/cds-*.jsa* # an archive is tied to the jars
    mv "$KAFKA_HOME/libs.partial" "$KAFKA_HOME/libs"
    echo "$want" >"$stamp"
}

# JVM options that point log4j2 at our config and log directory.
kafka_java_logging_opts() {
    printf '%s\n' "-Dlog4j2.configurationFile=$KAFKA_DEPLOY_DIR/log4j2.yaml" \
        "-Dkafka.logs.dir=$KAFKA_LOGS"
}

# JVM option for the CDS archive: use it if present, else record one into a
# .partial file that kafka_stop publishes only after a clean exit (a broker
# killed mid-dump must not leave a truncated archive behind).
kafka_cds_opt() {
    local cds
    cds=$(kafka_cds_path)
    if [[ -s "$cds" ]]; then
        echo "-XX:SharedArchiveFile=$cds"
    else
        rm -f "$(kafka_cds_partial "$cds")"
        echo "-XX:ArchiveClassesAtExit=$(kafka_cds_partial "$cds")"
    fi
}

# Validate STREAMFORGE_KAFKA_HEAP and set KAFKA_XMS, the initial heap:
# 512m, or the whole heap when that is smaller.
kafka_check_heap() {
    local heap="$STREAMFORGE_KAFKA_HEAP" num unit mib
    [[ "$heap" =~ ^([0-9]+)([kKmMgG]?)$ ]] ||
        die "STREAMFORGE_KAFKA_HEAP='$heap' is not a JVM size like 1g or 768m"
    num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2],,}
    case "$unit" in
        g) mib=$((num * 1024)) ;; m) mib=$num ;; k) mib=$((num / 1024)) ;; *) mib=$((num / 1048576)) ;;
    esac
    ((mib >= 256)) || die "STREAMFORGE_KAFKA_HEAP='$heap' is too small for a broker (256m at least)"
    if ((mib < 512)); then KAFKA_XMS=$heap; else KAFKA_XMS=512m; fi
}

# Render server.properties (every start, so port changes apply) and format
# the storage once; StorageTool -g ignores an already formatted directory.
kafka_configure() {
    mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
    render_template "$KAFKA_DEPLOY_DIR/server.properties.in" "$KAFKA_PROPS" \
        "KAFKA_PORT=$STREAMFORGE_KAFKA_PORT" \
        "CONTROLLER_PORT=$STREAMFORGE_KAFKA_CONTROLLER_PORT" \
        "DATA_DIR=$KAFKA_DATA"
    [[ -f "$KAFKA_DATA/meta.properties" ]] && return 0
    local cp="$KAFKA_HOME/libs/*" id logopts
    mapfile -t logopts < <(kafka_java_logging_opts)
    if [[ ! -s "$KAFKA_STATE/cluster.id" ]]; then
        id=$(java -cp "$cp" "${logopts[@]}" kafka.tools.StorageTool random-uuid | tail -n 1)
        echo "$id" >"$KAFKA_STATE/cluster.id"
    fi
    log "kafka: formatting storage in $KAFKA_DATA (cluster id $(cat "$KAFKA_STATE/cluster.id"))"
    java -cp "$cp" "${logopts[@]}" kafka.tools.StorageTool format --standalone -g \
        -t "$(cat "$KAFKA_STATE/cluster.id")" -c "$KAFKA_PROPS" >>"$KAFKA_OUT" 2>&1 ||
        { show_log_tail "$KAFKA_OUT"; die "kafka: StorageTool format failed"; }
}

# Start the broker in the background (does not wait for it to be ready).
kafka_launch() {
    if pidfile_pid "$KAFKA_PID" kafka.Kafka >/dev/null; then
        return 0
    fi
    kafka_check_heap
    ensure_port_free "$STREAMFORGE_KAFKA_PORT" kafka
    ensure_port_free "$STREAMFORGE_KAFKA_CONTROLLER_PORT" "kafka controller"
    kafka_fetch
    kafka_configure
    local logopts
    mapfile -t logopts < <(kafka_java_logging_opts)
    log "kafka: starting on 127.0.0.1:$STREAMFORGE_KAFKA_PORT (heap $STREAMFORGE_KAFKA_HEAP)"
    echo "=== $(date -Is) starting Kafka $KAFKA_VERSION ===" >>"$KAFKA_OUT"
    # Without -Xmx the JVM would take a quarter of the machine's RAM.
    # Start-up is CPU-bound (class loading, JIT). On a busy 2-core machine a
    # raised priority cuts it from ~15 s to ~6 s; kafka_wait restores the
    # normal priority as soon as the broker answers.
    spawn_daemon "$KAFKA_PID" "$KAFKA_OUT" \
        nice -n -10 java "-Xms$KAFKA_XMS" "-Xmx$STREAMFORGE_KAFKA_HEAP" -XX:+UseG1GC \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        "$(kafka_cds_opt)" -Xlog:cds=off -Xlog:cds+dynamic=off "${logopts[@]}" \
        -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$KAFKA_PROPS"
}

# Healthy = an independent client (kcat) gets metadata listing our broker.
kafka_healthy() {
    kcat -b "127.0.0.1:$STREAMFORGE_KAFKA_PORT" -L -m 3 2>/dev/null |
        grep -q "broker 1 at 127.0.0.1:$STREAMFORGE_KAFKA_PORT"
}

# Back to nice 0 for every thread of the broker (nice is per thread on
# Linux; threads started later inherit it from their creator).
kafka_normal_priority() {
    local pid tids
    pid=$(pidfile_pid "$KAFKA_PID" kafka.Kafka) || return 0
    tids=$(ls "/proc/$pid/task" 2>/dev/null) || return 0
    # shellcheck disable=SC2086 # one word per thread id
    renice -n 0 -p $tids >/dev/null 2>&1 || true
}

kafka_wait() {
    if wait_healthy "$KAFKA_HEALTH_TIMEOUT" "$KAFKA_PID" kafka_healthy; then
        kafka_normal_priority
        return 0
    fi
    show_log_tail "$KAFKA_OUT" 20
    show_log_tail "$KAFKA_SERVER_LOG" 40
    if pidfile_pid "$KAFKA_PID" kafka.Kafka >/dev/null; then
        die "kafka: no metadata from 127.0.0.1:$STREAMFORGE_KAFKA_PORT within ${KAFKA_HEALTH_TIMEOUT}s (see logs above)"
    fi
    die "kafka: the broker exited during startup (see logs above)"
}

kafka_stop() {
    local pid
    pid=$(pidfile_pid "$KAFKA_PID" kafka.Kafka) || { rm -f "$KAFKA_PID"; return 0; }
    log "kafka: stopping (pid $pid)"
    # A controlled shutdown of a single node takes a few seconds.
    # The first stop also writes the CDS archive: up to ~15 s more.
    local partial clean=1
    partial=$(kafka_cds_partial "$(kafka_cds_path)")
    stop_pid "$pid" 90 kafka || clean=0
    rm -f "$KAFKA_PID"
    if [[ -f "$partial" ]]; then
        if ((clean)); then mv "$partial" "$(kafka_cds_path)"; else rm -f "$partial"; fi
    fi
}

# Crash it (fault tests): SIGKILL, no shutdown; `start` recovers from its log.
kafka_kill() {
    local pid
    pid=$(pidfile_pid "$KAFKA_PID" kafka.Kafka) || { log "kafka: not running"; return 0; }
    log "kafka: killing (SIGKILL, pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 30
}

kafka_status() {
    local pid state=stopped
    if pid=$(pidfile_pid "$KAFKA_PID" kafka.Kafka); then
        state=running
        kafka_healthy || state=unhealthy
    else
        pid=-
    fi
    print_status_line kafka "$state" "$pid" "$STREAMFORGE_KAFKA_PORT" "$KAFKA_SERVER_LOG"
}
