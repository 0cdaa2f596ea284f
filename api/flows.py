"""Flows managed through the API: definitions in the database, processes supervised here.

>>> import asyncio
>>> supervisor = FlowSupervisor("postgresql://streamforge:streamforge@127.0.0.1:5433/streamforge",
...                             "/tmp/streamforge-flows")
>>> asyncio.run(supervisor.reconcile_once())  # doctest: +SKIP

What a flow process runs, and the directory a tenant's flows live in (a
tenant name may hold ``/`` or ``..``, the directory name never does):

>>> from pathlib import Path
>>> default_command(Path("/tmp/store"))[1:]
['-m', 'bytewax.run', 'flows.ingest', '-r', '/tmp/store', '-s', '5', '-b', '30']
>>> _directory_name("plant/../a")
'plant____a-be943187cc'

A flow is a name and a :class:`schemas.config.PipelineConfig` stored in
the ``flows`` table with its *desired* state (``running`` / ``stopped``)
and a ``generation`` a restart request increments. The supervisor
reconciles every ``interval`` seconds:

* desired running, no live process: write ``<dir>/<tenant>-<hash>/<name>/config.yaml``,
  create the Bytewax recovery store once (``python -m bytewax.recovery``,
  one partition) and start ``python -m bytewax.run flows.ingest -r <store>
  -s 5 -b 30`` with ``STREAMFORGE_CONFIG`` pointing at the YAML, stdout and
  stderr appended to ``flow.log`` beside it. Recovery resumes after the last
  snapshot (at most 5 s of input replayed; sinks are idempotent).
* its process exited while still wanted: ``crashed``, ``last_error`` = the
  log's last lines, restarted after a backoff (1 s doubling to 60 s, reset
  after 5 minutes of running), ``restarts`` + 1.
* a newer generation: stopped and started again (``restarts`` + 1).
* desired stopped or the row deleted: SIGTERM, SIGKILL after 10 s; a
  deleted flow's directory is archived (renamed ``<name>.deleted-<UTC time>``).

The recovery store belongs to one flow and one shape of it: ``state.json``
beside it names the row's ``created_at`` and ``state_epoch`` it was made
for. A flow deleted and created again under the same name (another
``created_at``), or given a config of another shape with ``fresh_state``
(``state_epoch`` + 1), finds a store made for something else: it is
archived (``recovery.archived-<UTC time>``) and a new one created, so a flow
never resumes state that is not its own.

Then it writes ``status``, ``pids``, ``started_at``, ``restarts`` and
``last_error`` back to the row, so every API process can report them.
Only one supervisor per database runs (``pg_try_advisory_lock``); another
API process (``uvicorn --workers N``) stands by and takes over when the
first one stops.

**Flows outlive the API** (``keep_flows``, the API's
``api_flows_outlive_api``, default true): flow processes run in sessions of
their own, and a supervisor that stops leaves them running. The next one
(a restarted API, or another API process taking over the lock) re-attaches
to each process its row names in ``pids``, once ``/proc`` shows it alive
and running with that flow's recovery store: status, pid, start time and
restarts carry on, and stop, restart and crash handling work as for its
own children (the exit status of an adopted process is not known, only
that it exited). With ``keep_flows`` false, flows stop with their supervisor
and the next one starts them again, resuming from their recovery stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.rows import dict_row

from connectors.runtime.logs import get_logger

log = get_logger("api.flows")

LOCK_KEY = 0x5354_5246_464C_4F57  # "STRFFLOW"
"""Advisory lock held by the one supervisor of a database."""

BACKOFF_MAX_S = 60.0
STABLE_AFTER_S = 300.0
STOP_TIMEOUT_S = 10.0


def default_command(recovery_dir: Path) -> list[str]:
    """The command of a flow process (its config comes from ``STREAMFORGE_CONFIG``)."""
    return [sys.executable, "-m", "bytewax.run", "flows.ingest", "-r", str(recovery_dir),
            "-s", "5", "-b", "30"]  # fmt: skip


class AdoptedProcess:
    """A flow process started by an earlier supervisor: watched by pid, not as a child.

    >>> import os
    >>> me = AdoptedProcess(os.getpid())
    >>> me.poll() is None, me.returncode
    (True, None)
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """None while it runs; then -1 (its exit status went to whoever reaped it)."""
        if self.returncode is None and not _alive(self.pid):
            self.returncode = -1
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.05)
        return -1


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


@dataclass
class FlowProcess:
    """A running (or exited) flow process and what the supervisor knows about it."""

    tenant: str
    name: str
    generation: int
    proc: subprocess.Popen[bytes] | AdoptedProcess | None = None
    started_at: datetime | None = None
    started_mono: float = 0.0
    restarts: int = 0
    backoff: float = 1.0
    next_start: float = 0.0
    last_error: str | None = None
    status: str = "stopped"
    log_path: Path | None = field(default=None, repr=False)

    def pid_list(self) -> list[int]:
        """The pids of the flow's live processes (one process per flow)."""
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None


def _directory_name(tenant: str) -> str:
    """A file-system-safe directory for a tenant (tenant names may hold ``/`` or ``..``)."""
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", tenant)[:40]
    return f"{slug}-{hashlib.sha256(tenant.encode()).hexdigest()[:10]}"


def _tail(path: Path | None, lines: int = 15) -> str | None:
    if path is None or not path.exists():
        return None
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 8192))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:]) or None


class FlowSupervisor:
    """Keeps the processes of the database's flows as their rows ask (see the module docstring)."""

    def __init__(
        self,
        url: str,
        flows_dir: str | Path,
        *,
        interval: float = 1.0,
        command: Callable[[Path], list[str]] = default_command,
        backoff_initial: float = 1.0,
        keep_flows: bool = False,
    ) -> None:
        self.url = url
        self.keep_flows = keep_flows
        self.backoff_initial = backoff_initial
        self.flows_dir = Path(flows_dir)
        self.interval = interval
        self.command = command
        self.procs: dict[tuple[str, str], FlowProcess] = {}
        self._lock_conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Run the supervision loop in the background (call from the event loop)."""
        self._task = asyncio.create_task(self._run(), name="flow-supervisor")

    async def stop(self) -> None:
        """Stop the loop, and every flow process it runs unless ``keep_flows``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.keep_flows:
            running = [fp.name for fp in self.procs.values() if fp.pid_list()]
            if running:
                log.info(
                    "flows keep running; the next supervisor re-attaches to them",
                    extra={"step": "flows", "flows": running},
                )
        else:
            await asyncio.to_thread(self._stop_all)
        if self._lock_conn is not None:
            await self._lock_conn.close()

    async def _run(self) -> None:
        while True:
            try:
                if await self._leader():
                    await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away; try again next round
                log.warning("flow supervision failed", extra={"step": "flows", "error": str(exc)})
                if self._lock_conn is not None:
                    await self._lock_conn.close()
                    self._lock_conn = None
            await asyncio.sleep(self.interval)

    async def _leader(self) -> bool:
        if self._lock_conn is not None and not self._lock_conn.closed:
            return True
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        row = await cur.fetchone()
        if row and row[0]:
            self._lock_conn = conn
            log.info("flow supervisor started", extra={"step": "flows"})
            return True
        await conn.close()
        return False

    # -- reconciliation -----------------------------------------------------

    async def reconcile_once(self) -> None:
        """Compare the rows with the processes, act, and write the result back."""
        async with await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, row_factory=dict_row
        ) as conn:
            cur = await conn.execute(
                "SELECT tenant, name, config, desired, generation, created_at, state_epoch,"
                " status, pids, started_at, restarts FROM flows"
            )
            rows = {(r["tenant"], r["name"]): r for r in await cur.fetchall()}
            for key in [k for k in self.procs if k not in rows]:
                gone = self.procs.pop(key)
                await asyncio.to_thread(self._stop, gone)
                await asyncio.to_thread(self._archive_deleted, gone)
            for key, row in rows.items():
                fp = self.procs.get(key)
                if fp is None:
                    fp = self.procs[key] = FlowProcess(key[0], key[1], row["generation"])
                    fp.backoff = self.backoff_initial
                    await asyncio.to_thread(self._adopt, fp, row)
                before = (fp.status, fp.pid_list(), fp.restarts, fp.last_error)
                await asyncio.to_thread(self._reconcile, fp, row)
                if (fp.status, fp.pid_list(), fp.restarts, fp.last_error) != before:
                    await conn.execute(
                        "UPDATE flows SET status = %s, pids = %s, started_at = %s, restarts = %s,"
                        " last_error = %s WHERE tenant = %s AND name = %s",
                        (fp.status, fp.pid_list(), fp.started_at, fp.restarts, fp.last_error,
                         fp.tenant, fp.name),
                    )  # fmt: skip

    def _adopt(self, fp: FlowProcess, row: dict[str, Any]) -> None:
        """Re-attach to the flow's process left running by an earlier supervisor, if any."""
        if row.get("status") != "running":
            return
        recovery = str(self._home(fp) / "recovery")
        for pid in row.get("pids") or []:
            if _alive(pid) and recovery in _cmdline(pid):
                fp.proc = AdoptedProcess(pid)
                fp.status = "running"
                fp.started_at = row.get("started_at")
                fp.started_mono = time.monotonic()
                fp.restarts = row.get("restarts") or 0
                fp.log_path = self._home(fp) / "flow.log"
                log.info(
                    "re-attached to a running flow process",
                    extra={"step": "flows", "flow": fp.name, "tenant": fp.tenant, "pid": pid},
                )
                return

    def _reconcile(self, fp: FlowProcess, row: dict[str, Any]) -> None:
        now = time.monotonic()
        if row["desired"] != "running":
            self._stop(fp)  # also forgets a process that exited by itself
            return
        if fp.alive and row["generation"] != fp.generation:
            self._stop(fp)
            fp.restarts += 1
            fp.next_start = 0.0
        elif fp.proc is not None and not fp.alive:
            code = fp.proc.returncode
            how = f"exited with status {code}"
            if isinstance(fp.proc, AdoptedProcess):
                how = "exited (status unknown: started by an earlier supervisor)"
            fp.status, fp.proc = "crashed", None
            fp.last_error = f"{how}: " + (_tail(fp.log_path) or "(no output)")
            fp.restarts += 1
            if fp.started_mono and now - fp.started_mono > STABLE_AFTER_S:
                fp.backoff = self.backoff_initial
            fp.next_start = now + fp.backoff
            fp.backoff = min(fp.backoff * 2, BACKOFF_MAX_S)
            log.warning(
                "flow process exited; restarting after backoff",
                extra={"step": "flows", "flow": fp.name, "tenant": fp.tenant, "status": code},
            )
        if not fp.alive and now >= fp.next_start:
            fp.generation = row["generation"]
            self._launch(fp, row["config"], self._store_owner(row))

    def _home(self, fp: FlowProcess) -> Path:
        return self.flows_dir / _directory_name(fp.tenant) / fp.name

    @staticmethod
    def _store_owner(row: dict[str, Any]) -> dict[str, Any]:
        created = row.get("created_at")
        return {
            "created_at": created.isoformat() if created is not None else None,
            "state_epoch": row.get("state_epoch", 0),
        }

    def _archive_deleted(self, fp: FlowProcess) -> None:
        home = self._home(fp)
        if home.exists():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            home.rename(home.with_name(f"{fp.name}.deleted-{stamp}"))
            log.info(
                "deleted flow's directory archived",
                extra={"step": "flows", "flow": fp.name, "tenant": fp.tenant},
            )

    def _own_store(self, home: Path, owner: dict[str, Any]) -> Path:
        """The recovery store made for this flow and shape; another one is archived first."""
        recovery, marker = home / "recovery", home / "state.json"
        mine = json.dumps(owner, sort_keys=True)
        # (A store without a marker predates it: adopted, as before.)
        if recovery.exists() and marker.exists() and marker.read_text() != mine:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            recovery.rename(home / f"recovery.archived-{stamp}")
            log.warning(
                "recovery store made for another flow or shape archived; starting afresh",
                extra={"step": "flows", "path": str(home), "owner": owner},
            )
        recovery.mkdir(parents=True, exist_ok=True)
        marker.write_text(mine)
        return recovery

    def _launch(
        self, fp: FlowProcess, config: dict[str, Any], owner: dict[str, Any] | None = None
    ) -> None:
        home = self._home(fp)
        home.mkdir(parents=True, exist_ok=True)
        recovery = self._own_store(home, owner or {"created_at": None, "state_epoch": 0})
        config_path = home / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        if not any(recovery.iterdir()):
            subprocess.run(
                [sys.executable, "-m", "bytewax.recovery", str(recovery), "1"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        fp.log_path = home / "flow.log"
        env = {**os.environ, "STREAMFORGE_CONFIG": str(config_path)}
        with fp.log_path.open("ab") as out:
            fp.proc = subprocess.Popen(
                self.command(recovery), env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        fp.started_at, fp.started_mono = datetime.now(UTC), time.monotonic()
        fp.status = "running"
        log.info(
            "flow process started",
            extra={"step": "flows", "flow": fp.name, "tenant": fp.tenant, "pid": fp.proc.pid},
        )

    def _stop(self, fp: FlowProcess) -> None:
        proc = fp.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        fp.proc = None
        fp.status = "stopped"

    def _stop_all(self) -> None:
        for fp in self.procs.values():
            self._stop(fp)
