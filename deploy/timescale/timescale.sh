# shellcheck shell=bash
# TimescaleDB: PostgreSQL 17 + postgresql-17-timescaledb from Debian trixie,
# run from a debootstrap root with chroot (bookworm ships no TimescaleDB).
# Sourced by deploy/services.sh after deploy/lib/common.sh.
#
# Cache:  $STREAMFORGE_CACHE/timescale/trixie-root   (~600 MB, built once)
# State:  $STREAMFORGE_STATE/timescale/{data,postgres.log}, bind-mounted into
#         the root at /var/lib/pgts-<hash of the state path>. The root stays
#         a pure cache (`reset` wipes only the state), and two states (say a
#         developer's and CI's, on different ports) can share one root.
# No /proc, /dev/shm or /dev mounts are needed: dynamic_shared_memory_type
# is mmap, and debootstrap creates the few device nodes in the root's /dev.

# Canonical path: it is compared with /proc/PID/cwd links.
TS_ROOT="$(realpath -m "$STREAMFORGE_CACHE")/timescale/trixie-root"
TS_STATE="$STREAMFORGE_STATE/timescale"
# Paths inside the root:
TS_INNER="/var/lib/pgts-$(realpath -m "$TS_STATE" | sha256sum | cut -c1-12)"
TS_PGDATA="$TS_INNER/data"
TS_PGBIN=/usr/lib/postgresql/17/bin
# Paths on the host:
TS_MOUNT="$TS_ROOT$TS_INNER"
TS_LOG="$TS_STATE/postgres.log"
TS_PID="$RUN_DIR/timescale.pid"
TS_DEBIAN_MIRROR=http://deb.debian.org/debian

# Build the trixie root once. debootstrap writes to a .partial directory
# that is renamed only on success, so an interrupted run never looks done.
ts_bootstrap_root() {
    [[ -f "$TS_ROOT/.streamforge-complete" ]] && return 0
    ensure_packages debootstrap
    local partial="$TS_ROOT.partial" blog="$STREAMFORGE_CACHE/timescale/debootstrap.log"
    mkdir -p "$STREAMFORGE_CACHE/timescale"
    ts_unmount_under "$partial"
    rm -rf --one-file-system "$partial"
    log "timescale: building the Debian trixie root with PostgreSQL 17 + TimescaleDB (first run only, ~1 min, ~600 MB)"
    debootstrap --variant=minbase --include=postgresql-17,postgresql-17-timescaledb \
        trixie "$partial" "$TS_DEBIAN_MIRROR" >"$blog" 2>&1 ||
        { ts_unmount_under "$partial"; show_log_tail "$blog"; die "timescale: debootstrap failed (log $blog)"; }
    ts_unmount_under "$partial" # debootstrap mounts /proc and /sys while it works
    chroot "$partial" apt-get clean
    rm -rf --one-file-system "$TS_ROOT"
    mv "$partial" "$TS_ROOT"
    touch "$TS_ROOT/.streamforge-complete"
}

# Unmount everything mounted at or below a directory, deepest first.
ts_unmount_under() {
    local dir="$1" target
    [[ -d "$dir" ]] || return 0
    dir=$(realpath "$dir")
    { findmnt -rn -o TARGET | grep -E "^${dir}(/|$)" || true; } | sort -r |
        while read -r target; do
            umount "$target" 2>/dev/null || umount -l "$target"
        done
}

# Run a command inside the root as its postgres user (whose uid differs from
# the host's postgres, if any: data files show up as another user on the host).
ts_as_postgres() {
    local ids
    ids="$(chroot "$TS_ROOT" id -u postgres):$(chroot "$TS_ROOT" id -g postgres)"
    chroot --userspec="$ids" "$TS_ROOT" env -i PATH="$TS_PGBIN:/usr/bin:/bin" \
        HOME="$TS_INNER" LANG=C.UTF-8 PGHOST=/tmp PGPORT="$STREAMFORGE_DB_PORT" "$@"
}

# Bind-mount this state's directory into the root (the only mount we make).
ts_mount_state() {
    mkdir -p "$TS_STATE" "$TS_MOUNT"
    mountpoint -q "$TS_MOUNT" && return 0
    mount --bind "$TS_STATE" "$TS_MOUNT"
    chroot "$TS_ROOT" chown postgres:postgres "$TS_INNER"
}

ts_unmount_state() {
    [[ -d "$TS_MOUNT" ]] || return 0
    if mountpoint -q "$TS_MOUNT"; then
        umount "$TS_MOUNT" 2>/dev/null || umount -l "$TS_MOUNT"
    fi
    rmdir "$TS_MOUNT" 2>/dev/null || true
}

# initdb on first start: peer auth on the root's Unix socket (admin only),
# SCRAM passwords over TCP for everyone else.
ts_initdb() {
    [[ -f "$TS_STATE/data/PG_VERSION" ]] && return 0
    log "timescale: initialising a new cluster in $TS_STATE/data"
    ts_as_postgres initdb -D "$TS_PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >"$TS_STATE/initdb.log" 2>&1 ||
        { show_log_tail "$TS_STATE/initdb.log"; die "timescale: initdb failed"; }
    echo "include_if_exists = 'streamforge.conf'" >>"$TS_STATE/data/postgresql.conf"
}

# Our settings, rewritten on every start so STREAMFORGE_DB_PORT changes apply.
ts_configure() {
    cat >"$TS_STATE/data/streamforge.conf" <<EOF
# Written by deploy/timescale/timescale.sh on every start; edits are lost.
port = $STREAMFORGE_DB_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '/tmp'      # /tmp inside the root; host clients use TCP
shared_preload_libraries = 'timescaledb'
dynamic_shared_memory_type = mmap     # no /dev/shm needed in the root
timescaledb.telemetry_level = off
max_connections = 200
# A commit is on disk before it is acknowledged (the sink also asks for it
# per transaction): a crash loses nothing that was reported as written.
synchronous_commit = on
fsync = on
password_encryption = scram-sha-256
EOF
}

# Pids of processes running in the root with this state's data dir as their
# working directory: the postmaster and its backends, nobody else's.
ts_our_processes() {
    local p cwd
    [[ -d "$TS_MOUNT" ]] || return 0
    for p in /proc/[0-9]*; do
        cwd=$(readlink "$p/cwd" 2>/dev/null) || continue
        [[ "$cwd" == "$TS_MOUNT"/* ]] && echo "${p#/proc/}"
    done
    return 0
}

# Pid of the running postmaster, from its own postmaster.pid.
ts_running_pid() {
    local pid
    [[ -s "$TS_STATE/data/postmaster.pid" ]] || return 1
    read -r pid <"$TS_STATE/data/postmaster.pid" || true
    pid_alive "$pid" || return 1
    # A stale file may name a recycled pid: ours runs in our data dir.
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$TS_MOUNT/data" ]] || return 1
    printf '%s\n' "$pid"
}

# After a crash (kill -9, OOM, reboot) postmaster.pid and the socket lock
# file in the root's /tmp name a dead or recycled pid, and PostgreSQL refuses
# to start while that pid exists (even as an unreaped zombie). Called only
# when ts_running_pid said our server is not running: once none of its
# backends is left, both files are safe to remove.
ts_clear_stale_lock() {
    local pid sock="$TS_ROOT/tmp/.s.PGSQL.$STREAMFORGE_DB_PORT"
    for pid in $(ts_our_processes); do
        stop_pid "$pid" 10 "leftover postgres backend" || true
    done
    if [[ -f "$TS_STATE/data/postmaster.pid" ]]; then
        warn "timescale: removing the lock files left by a server that did not shut down cleanly"
    fi
    rm -f "$TS_STATE/data/postmaster.pid" "$sock" "$sock.lock"
}

# Start PostgreSQL and wait until it accepts connections (takes ~1 s).
ts_launch() {
    if ts_running_pid >"$TS_PID"; then
        return 0
    fi
    rm -f "$TS_PID"
    ensure_port_free "$STREAMFORGE_DB_PORT" timescale
    ts_bootstrap_root
    ts_mount_state
    ts_initdb
    ts_configure
    ts_clear_stale_lock
    log "timescale: starting PostgreSQL 17 + TimescaleDB on 127.0.0.1:$STREAMFORGE_DB_PORT"
    # setsid + closed fds: the postmaster must not keep our caller's pipes
    # (e.g. `make up | tee`) or the services lock open.
    ts_as_postgres setsid pg_ctl -D "$TS_PGDATA" -l "$TS_INNER/postgres.log" -w -t 120 start \
        </dev/null >/dev/null 2>&1 9>&- ||
        { show_log_tail "$TS_LOG"; die "timescale: PostgreSQL did not start"; }
    ts_running_pid >"$TS_PID" || { show_log_tail "$TS_LOG"; die "timescale: PostgreSQL exited after start"; }
}

# Quote a value for a single-quoted psql meta-command argument.
ts_psql_quote() {
    local v="${1//\\/\\\\}"
    printf '%s' "${v//\'/\'\'}"
}

# Create the application role and database (idempotent; keeps the password in
# sync with STREAMFORGE_DB_PASSWORD). The timescaledb extension needs a
# superuser, so postgres creates it, in template1 too, as the official
# timescale/timescaledb image does: databases the application creates later
# (tests) have it as well. Use TEMPLATE template0 for a database without it.
ts_ensure_database() {
    local q_user q_pass q_db
    q_user=$(ts_psql_quote "$STREAMFORGE_DB_USER")
    q_pass=$(ts_psql_quote "$STREAMFORGE_DB_PASSWORD")
    q_db=$(ts_psql_quote "$STREAMFORGE_DB_NAME")
    ts_as_postgres env PGOPTIONS="-c client_min_messages=warning" \
        psql -X -q -v ON_ERROR_STOP=1 -U postgres -d postgres >/dev/null <<EOF
\\set user '$q_user'
\\set pass '$q_pass'
\\set db '$q_db'
SELECT format('CREATE ROLE %I', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \\gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB NOSUPERUSER PASSWORD %L', :'user', :'pass') \\gexec
-- The REST API runs its queries as this role (SET ROLE), which owns nothing,
-- so row-level security confines it to the caller's tenant.
SELECT 'CREATE ROLE streamforge_api NOLOGIN NOINHERIT'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streamforge_api') \\gexec
SELECT format('GRANT streamforge_api TO %I', :'user') \\gexec
\\c template1
CREATE EXTENSION IF NOT EXISTS timescaledb;
\\c postgres
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \\gexec
\\c :"db"
CREATE EXTENSION IF NOT EXISTS timescaledb;
EOF
}

# Healthy = the application user logs in over TCP with its password and sees
# the timescaledb extension in its database.
ts_healthy() {
    ts_as_postgres env PGPASSWORD="$STREAMFORGE_DB_PASSWORD" PGCONNECT_TIMEOUT=3 \
        psql -X -tA -h 127.0.0.1 -U "$STREAMFORGE_DB_USER" -d "$STREAMFORGE_DB_NAME" \
        -c "select 1 from pg_extension where extname = 'timescaledb'" 2>/dev/null | grep -qx 1
}

ts_wait() {
    # Role, database and extension are (re)checked on every `up`.
    ts_ensure_database || { show_log_tail "$TS_LOG"; die "timescale: creating role/database failed"; }
    wait_healthy 30 "$TS_PID" ts_healthy && return 0
    show_log_tail "$TS_LOG"
    die "timescale: '$STREAMFORGE_DB_USER' cannot query database '$STREAMFORGE_DB_NAME' on 127.0.0.1:$STREAMFORGE_DB_PORT"
}

ts_stop() {
    local pid
    if pid=$(ts_running_pid); then
        log "timescale: stopping (pid $pid)"
        # Fast shutdown: roll back open transactions, checkpoint, exit.
        ts_as_postgres pg_ctl -D "$TS_PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            stop_pid "$pid" 30 postgres || true
    fi
    # Stragglers (a crashed postmaster's backends) would keep the mount busy.
    for pid in $(ts_our_processes); do
        stop_pid "$pid" 10 "leftover postgres backend" || true
    done
    ts_unmount_state
    rm -f "$TS_PID"
}

# Crash it (fault tests): SIGKILL to the postmaster and every backend at once,
# as a power cut would leave it (minus the OS page cache): WAL still in
# shared memory is gone. `start` clears the stale lock and runs crash recovery.
ts_kill() {
    local pids
    pids=$(ts_our_processes)
    [[ -n "$pids" ]] || { log "timescale: not running"; return 0; }
    log "timescale: killing (SIGKILL, pids $(echo $pids))"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    local pid
    for pid in $pids; do wait_gone "$pid" 30; done
    rm -f "$TS_PID"
}

ts_status() {
    local pid state=stopped
    if pid=$(ts_running_pid); then
        state=running
        ts_healthy || state=unhealthy
    else
        pid=-
    fi
    print_status_line timescale "$state" "$pid" "$STREAMFORGE_DB_PORT" "$TS_LOG"
}
