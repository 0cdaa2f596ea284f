# shellcheck shell=bash
# Shared helpers for deploy/services.sh: settings, logging, prerequisites,
# Debian packages, background processes and health-check loops.
# Sourced, never executed; the per-service files build on these.

# --- Settings (documented in deploy/README-services.md) ---------------------
STREAMFORGE_CACHE="${STREAMFORGE_CACHE:-$HOME/.cache/streamforge}"
STREAMFORGE_STATE="${STREAMFORGE_STATE:-$STREAMFORGE_CACHE/state}"
STREAMFORGE_KAFKA_PORT="${STREAMFORGE_KAFKA_PORT:-9092}"
STREAMFORGE_KAFKA_CONTROLLER_PORT="${STREAMFORGE_KAFKA_CONTROLLER_PORT:-9093}"
STREAMFORGE_KAFKA_HEAP="${STREAMFORGE_KAFKA_HEAP:-1g}"
STREAMFORGE_DB_PORT="${STREAMFORGE_DB_PORT:-5433}"
STREAMFORGE_DB_USER="${STREAMFORGE_DB_USER:-streamforge}"
STREAMFORGE_DB_PASSWORD="${STREAMFORGE_DB_PASSWORD:-streamforge}"
STREAMFORGE_DB_NAME="${STREAMFORGE_DB_NAME:-streamforge}"
STREAMFORGE_MQTT_PORT="${STREAMFORGE_MQTT_PORT:-1883}"

RUN_DIR="$STREAMFORGE_STATE/run"   # pid files and the lock

# --- Output -------------------------------------------------------------------
log() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# Print the last lines of a log file to stderr, to explain a failure in place.
show_log_tail() {
    local file="$1" lines="${2:-40}"
    if [[ -s "$file" ]]; then
        printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
        tail -n "$lines" "$file" >&2
        printf -- '----- end of %s -----\n' "$file" >&2
    else
        printf '(log %s is empty or missing)\n' "$file" >&2
    fi
}

# --- Prerequisites --------------------------------------------------------------
require_root() {
    [[ $(id -u) -eq 0 ]] ||
        die "must run as root (apt-get, debootstrap, chroot and mount need it); try: sudo bash $0 ..."
}

# Everything `up` needs before it touches anything.
require_up_prerequisites() {
    require_root
    command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian/Ubuntu hosts only"
    command -v java >/dev/null || die "java not found: install a JDK 17+ (apt-get install -y openjdk-17-jre-headless)"
    command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install -y maven)"
}

# Install the Debian packages that are missing; `apt-get update` runs only
# when something actually has to be installed.
ensure_packages() {
    local pkg missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    log "installing Debian packages: ${missing[*]}"
    # A stale third-party source must not block installs from Debian itself.
    apt-get update -qq || warn "apt-get update reported errors; trying the install anyway"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >"$STREAMFORGE_CACHE/apt-install.log" 2>&1 ||
        { show_log_tail "$STREAMFORGE_CACHE/apt-install.log"; die "apt-get install ${missing[*]} failed"; }
}

# --- Locking ------------------------------------------------------------------------
# Serialises concurrent `up`/`down` runs (several engineers share one box).
# fd 9 is closed for every daemon we launch so none of them inherits the lock.
take_lock() {
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/services.lock"
    flock -w 600 9 || die "another deploy/services.sh is still running (lock $RUN_DIR/services.lock)"
}

# --- Processes ------------------------------------------------------------------------
# True if the pid exists and is not a zombie waiting to be reaped.
pid_alive() {
    local pid="$1" state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# Pid recorded in a pid file, if that process is still alive and (when a
# pattern is given) its command line matches, so a recycled pid is not ours.
pidfile_pid() {
    local file="$1" pattern="${2:-}" pid
    [[ -s "$file" ]] || return 1
    read -r pid <"$file" || true
    pid_alive "$pid" || return 1
    if [[ -n "$pattern" ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern" || return 1
    fi
    printf '%s\n' "$pid"
}

# Launch a command detached from this shell (own session, no inherited
# terminal, pipes or lock) with stdout+stderr appended to a log file. The
# child writes its own pid before exec'ing, so the pid file names the daemon
# itself and not a wrapper.
spawn_daemon() {
    local pidfile="$1" logfile="$2"
    shift 2
    rm -f "$pidfile"
    # shellcheck disable=SC2016 # expanded by the child shell, on purpose
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' spawn "$pidfile" "$@" \
        </dev/null >>"$logfile" 2>&1 9>&- &
    # Wait (briefly) for the pid file so callers can rely on it.
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s "$pidfile" ]] && return 0
        sleep 0.1
    done
    die "could not launch $1 (no pid file $pidfile after 5 s)"
}

# TERM, wait up to $2 seconds, then KILL. Returns once the pid is gone:
# 0 if it exited after TERM, 1 if it had to be killed.
stop_pid() {
    local pid="$1" timeout="${2:-30}" name="${3:-process}" i
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    warn "$name (pid $pid) did not stop within ${timeout}s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || return 1
        sleep 0.1
    done
    die "$name (pid $pid) survived KILL"
}

# Wait up to $2 seconds for a pid to be gone (after a KILL); 1 if it is not.
wait_gone() {
    local pid="$1" timeout="${2:-30}" i
    for ((i = 0; i < timeout * 10; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    warn "pid $pid still alive ${timeout}s after KILL"
    return 1
}

# Fail with a clear message if some process other than ours listens on a
# port. Waits up to 5 s first: a just-killed process may still hold it.
ensure_port_free() {
    local port="$1" name="$2" who i
    for ((i = 0; i < 50; i++)); do
        who=$(ss -Htlnp "sport = :$port" 2>/dev/null | head -n 1)
        [[ -z "$who" ]] && return 0
        sleep 0.1
    done
    die "$name: port $port is already in use by another process: $who" \
        "(stop it or set the STREAMFORGE_*_PORT variable)"
}

# Run a check command until it succeeds, the timeout expires or the watched
# pid dies. Usage: wait_healthy TIMEOUT PIDFILE CMD...
wait_healthy() {
    local timeout="$1" pidfile="$2" deadline
    shift 2
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        "$@" && return 0
        pidfile_pid "$pidfile" >/dev/null || return 2 # died while starting
        sleep 0.5
    done
    return 1
}

# Replace @NAME@ placeholders: render_template IN OUT NAME=value...
render_template() {
    local in="$1" out="$2" expr=() kv
    shift 2
    for kv in "$@"; do
        # The value may contain '/', so use '|' as the sed delimiter.
        expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${expr[@]}" "$in" >"$out.tmp"
    mv "$out.tmp" "$out"
}

# One status line, the same layout for every service.
print_status_line() {
    # name state pid port log
    printf '%-10s %-9s pid=%-8s port=%-6s log=%s\n' "$@"
}
