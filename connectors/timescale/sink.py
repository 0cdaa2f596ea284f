"""TimescaleDB / PostgreSQL sink: every output kind into its table, idempotently.

>>> from bytewax.dataflow import Dataflow
>>> import bytewax.operators as op
>>> from bytewax.testing import TestingSource, run_main
>>> from datetime import datetime, timezone
>>> from schemas.models import Reading
>>> from connectors.timescale.config import TimescaleSinkConfig
>>> r = Reading("press-1", "temperature", datetime(2026, 1, 1, tzinfo=timezone.utc), 71.5)
>>> flow = Dataflow("to_timescale")
>>> outputs = op.input("in", flow, TestingSource([("0", ("telemetry", [r]))]))
>>> sink = TimescaleSink(TimescaleSinkConfig())
>>> op.output("db", outputs, sink)
>>> run_main(flow)  # doctest: +SKIP
>>> sink.part_fn("default/press-1/temperature")   # the partition on the bucket's worker
140

A record the database refuses is kept as a dead letter that names the
table and the reason (and the record's own time, so a replay stores it once):

>>> dead = _dead_letter(r, "readings", "invalid byte sequence")
>>> dead.origin, dead.reason, dead.received_at == r.ts
('timescale/readings', 'database refused Reading for readings: invalid byte sequence', True)

Tables, keys and merge rules: :mod:`connectors.timescale.rows` and
``schemas/sql/``; the edition (plain PostgreSQL, Apache or full
TimescaleDB): :mod:`connectors.timescale.edition`; retention:
:mod:`connectors.timescale.retention`; options:
:class:`connectors.timescale.config.TimescaleSinkConfig`.

**Partitions and the writer thread.** A :class:`TimescaleSink` is a Bytewax
``FixedPartitionedSink`` of :data:`connectors.runtime.outputs.RoutedOutput` items with
the aligned partitions of :mod:`connectors.runtime.routing` (like the Kafka sink): a
series bucket's records go to a partition on the worker that processed the
bucket, so they never cross to another process. The partitions a process
holds share one :class:`BackgroundWriter`: a bounded queue
(``buffer_rows``) and a thread with its own connection that writes what is
queued, in order, in transactions of at most ``batch_rows`` records. So
the dataflow never waits for the database while it processes (an alarm
reaches Kafka without waiting for the readings' COPY before it), and the
database's work overlaps the flow's. The first connection applies the
migrations (under an advisory lock, so processes do not race) and logs the
edition; the process holding the first partition also runs the retention
job every ``retention_interval``.

**Guarantee.** Bytewax calls a partition's ``snapshot()`` at the end of each
epoch, before the epoch's snapshot is committed; it returns only once the
writer has committed everything queued so far. So when an epoch is
snapshotted its rows are durable. After a crash, Bytewax resumes
from the last snapshot and replays what followed it; every table has a
natural key and writes are ``INSERT ... ON CONFLICT`` (rollups and alarm
state: the higher revision / seq wins), so the replay adds no duplicate and
cannot roll a row back to an older version. Together: effectively exactly
once in the tables, provided the flow itself re-emits the same records on
replay. The queue is bounded: when ``buffer_rows`` records wait, the
dataflow waits too (backpressure, counted in
``streamforge_timescale_buffer_full_total``).

**The database going away.** A failed write is rolled back, the connection
dropped, and the whole batch retried on a new connection with exponential
backoff (``retry_initial`` doubling up to ``retry_max``), each failure
logged and counted. Meanwhile ``write_batch`` does not return, which holds
the dataflow (backpressure up to the inputs); when the database is back the
flow resumes by itself. With ``give_up_after`` set, the writer fails
instead after that long, and the next ``write_batch`` or ``snapshot()``
raises, stopping the dataflow. Records the database *refuses* (not
a connection problem: e.g. a NUL character in a text) are isolated and
stored as dead letters with the database's reason; one that cannot even be
stored that way is logged in full and counted in
``streamforge_timescale_lost_total``.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter, gauge
from connectors.runtime.outputs import Output, count_outputs, flatten_outputs
from connectors.runtime.routing import ALIGNED_PARTITION_NAMES, aligned_partition
from connectors.timescale.config import TimescaleSinkConfig
from connectors.timescale.edition import Edition, edition_info
from connectors.timescale.migrate import migrate
from connectors.timescale.retention import apply_retention, ensure_policies
from connectors.timescale.rows import DEAD_LETTERS, SPEC_BY_TYPE, TableSpec
from connectors.timescale.writer import Rejected, TimescaleWriter
from schemas.models import DeadLetter, to_json
from schemas.settings import Settings

log = get_logger("connectors.timescale.sink")


ROWS_WRITTEN = counter(
    "streamforge_timescale_rows_written_total", "Rows inserted or updated, by table"
)
ROWS_UNCHANGED = counter(
    "streamforge_timescale_rows_unchanged_total",
    "Records already stored (replays, older rollup revisions), by table",
)
RETRIES = counter(
    "streamforge_timescale_retries_total", "Failed batch writes that will be retried, by error"
)
PENDING = gauge(
    "streamforge_timescale_pending_records",
    "Records a sink partition holds while it waits for the database, by worker",
)
REJECTED = counter(
    "streamforge_timescale_rejected_total",
    "Records the database refused, stored as dead letters instead, by table",
)
QUEUED = gauge(
    "streamforge_timescale_queued_records", "Records waiting for this process's writer thread"
)
BUFFER_FULL = counter(
    "streamforge_timescale_buffer_full_total",
    "Times the writer's buffer was full and the dataflow waited for the database",
)
LOST = counter(
    "streamforge_timescale_lost_total",
    "Records neither stored nor storable as dead letters (each logged in full)",
)


def _record_time(record: Any) -> datetime:
    for name in ("ts", "window_start", "received_at"):
        value = getattr(record, name, None)
        if isinstance(value, datetime):
            return value
    return datetime.now(UTC)


def _dead_letter(record: Any, table: str, reason: str) -> DeadLetter:
    """The dead letter that keeps a record the database refused.

    ``received_at`` is the record's own time, not now: the same refused
    record then makes the same dead letter (same fingerprint), so a retry or
    a replay does not store it twice.
    """
    try:
        payload = to_json(record).decode()
    except Exception:
        payload = repr(record)
    return DeadLetter(
        received_at=_record_time(record),
        # Records that carry a source keep it; others (rollups, alarms) have none.
        source=getattr(record, "source", "simulator"),
        reason=f"database refused {type(record).__name__} for {table}: {reason}",
        payload=payload,
        origin=f"timescale/{table}",
        step="timescale",
        tenant=getattr(record, "tenant", None),
    )


class TimescalePartition:
    """A synchronous writer: a connection, the retry loop and (worker 0) retention.

    The sink runs one in a :class:`BackgroundWriter` thread per process;
    tests and tools use it directly (:meth:`TimescaleSink.sync_writer`).
    """

    def __init__(
        self, config: TimescaleSinkConfig, url: str, step_id: str, worker_index: int
    ) -> None:
        self.config = config
        self.step_id = step_id
        self.worker = str(worker_index)
        self.kinds = frozenset(config.kinds)
        self.edition: Edition | None = None
        self._prepared = False
        self._runs_retention = worker_index == 0
        self._next_retention = time.monotonic()
        self.writer = TimescaleWriter(
            url,
            connect_timeout=config.connect_timeout,
            application_name=f"streamforge-sink-{worker_index}",
            on_connect=self._prepare,
            direct_copy=config.direct_copy,
        )
        try:
            self.writer.connect()
        except psycopg.Error as exc:
            # Not fatal: the first write retries until the database answers.
            log.warning(
                "database not reachable at start; writes will retry",
                extra={"step": step_id, "worker": self.worker, "error": str(exc).strip()},
            )

    def run_retention(self) -> None:
        """Make this writer the one that runs the retention job (one per sink in a cluster)."""
        self._runs_retention = True

    def _prepare(self, conn: psycopg.Connection) -> None:
        """First connection only: migrations, edition, and policies of the full edition."""
        if self._prepared:
            return
        applied = migrate(conn) if self.config.apply_migrations_on_start else []
        info = edition_info(conn)
        conn.commit()
        self.edition = info.edition
        log.info(
            "timescale sink connected",
            extra={
                "step": self.step_id,
                "worker": self.worker,
                "edition": info.edition,
                "extension_version": info.installed_version,
                "migrations_applied": applied,
                "retention": {
                    "none": "DELETE by time",
                    "apache": "drop_chunks job",
                    "timescale": "native policies",
                }[info.edition],
            },
        )
        if info.edition == "none" and info.available:
            log.warning(
                "TimescaleDB is available but not installed in this database; using plain "
                "tables (a superuser can run CREATE EXTENSION timescaledb before migrating)",
                extra={"step": self.step_id},
            )
        if info.edition == "timescale" and self._runs_retention:
            ensure_policies(
                conn, self.config.retention_days.by_table(), self.config.compress_after_days
            )
        self._prepared = True

    def write_batch(self, items: list[Output]) -> None:
        """Write and commit ``items``; blocks, retrying, while the database is down."""
        size = self.config.batch_rows
        pairs = flatten_outputs(items)
        for start in range(0, len(pairs), size):
            groups = self._group(pairs[start : start + size])
            if groups:
                self._write_with_retry(groups)
        if self._runs_retention and time.monotonic() >= self._next_retention:
            self._retention()

    def close(self) -> None:
        """Close the connection (end of a finite dataflow)."""
        self.writer.close()

    def _group(self, items: Sequence[Output]) -> dict[TableSpec, list[Any]]:
        by_type: dict[type, list[Any]] = {}
        kinds = self.kinds
        for kind, record in items:
            if kind not in kinds:
                continue
            records = by_type.get(type(record))
            if records is None:
                records = by_type[type(record)] = []
            records.append(record)
        groups: dict[TableSpec, list[Any]] = {}
        for record_type, records in by_type.items():
            spec = SPEC_BY_TYPE.get(record_type)
            if spec is None:
                # A flow bug, not bad data; still never silent, never fatal.
                REJECTED.inc(len(records), table="-")
                log.error(
                    "no table stores this record type; storing dead letters",
                    extra={"step": self.step_id, "type": record_type.__name__},
                )
                dead = [_dead_letter(r, "-", "no table stores this record type") for r in records]
                groups.setdefault(DEAD_LETTERS, []).extend(dead)
            else:
                groups.setdefault(spec, []).extend(records)
        return groups

    def _write_with_retry(self, groups: dict[TableSpec, list[Any]]) -> None:
        total = sum(len(r) for r in groups.values())
        delay = self.config.retry_initial
        started = time.monotonic()
        attempt = 0
        PENDING.set(total, worker=self.worker)
        while True:
            try:
                outcome = self._write_once(groups)
                break
            except psycopg.Error as exc:
                self.writer.reset()
                attempt += 1
                RETRIES.inc(error=type(exc).__name__)
                waited = time.monotonic() - started
                give_up = self.config.give_up_after
                extra = {
                    "step": self.step_id,
                    "worker": self.worker,
                    "attempt": attempt,
                    "records": total,
                    "retry_in_s": round(delay, 3),
                    "error": str(exc).strip(),
                }
                if give_up is not None and waited >= give_up:
                    log.error("giving up on the database", extra=extra)
                    raise RuntimeError(
                        f"TimescaleDB write failed for {waited:.0f}s (give_up_after): {exc}"
                    ) from exc
                # A connection problem is expected now and then; anything
                # else (a missing table, say) needs a person.
                connection_lost = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
                (log.warning if connection_lost else log.error)(
                    "database write failed; retrying", extra=extra
                )
                # Jitter keeps the workers of a restarted flow from reconnecting in step.
                time.sleep(delay * (1.0 + 0.1 * random.random()))
                delay = min(delay * 2.0, self.config.retry_max)
        PENDING.set(0, worker=self.worker)
        if attempt:
            log.info(
                "database writes resumed",
                extra={"step": self.step_id, "worker": self.worker, "attempts": attempt + 1},
            )
        self._account(groups, *outcome)

    def _write_once(
        self, groups: dict[TableSpec, list[Any]]
    ) -> tuple[dict[str, int], int, list[Rejected], list[Rejected]]:
        """One attempt: the batch, then dead letters for what the database refused.

        Returns (rows written per table, dead letters written for refused
        records, refused records, records lost). Raises ``psycopg.Error`` on
        a connection (or other non-data) problem: the caller retries all of
        it, which idempotence makes safe.
        """
        written, rejected = self.writer.write_isolating(groups)
        lost = [r for r in rejected if r.table == DEAD_LETTERS.table]
        dead = [
            _dead_letter(r.record, r.table, r.error)
            for r in rejected
            if r.table != DEAD_LETTERS.table
        ]
        stored = 0
        if dead:
            # Their payload is JSON (a NUL becomes \u0000), so the database takes them.
            done, refused = self.writer.write_isolating({DEAD_LETTERS: dead})
            stored = done.get(DEAD_LETTERS.table, 0)
            lost += refused
        return written, stored, rejected, lost

    def _account(
        self,
        groups: dict[TableSpec, list[Any]],
        written: dict[str, int],
        stored: int,
        rejected: list[Rejected],
        lost: list[Rejected],
    ) -> None:
        """Metrics and logs of a written batch (once, however many attempts it took)."""
        refused: dict[str, int] = {}
        for item in rejected:
            refused[item.table] = refused.get(item.table, 0) + 1
            REJECTED.inc(table=item.table)
            log.error(
                "database refused a record; stored as a dead letter",
                extra={"step": self.step_id, "table": item.table, "error": item.error},
            )
        for item in lost:
            LOST.inc(table=item.table)
            log.error(
                "record could not be stored, not even as a dead letter",
                extra={
                    "step": self.step_id,
                    "table": item.table,
                    "error": item.error,
                    "record": repr(item.record),
                },
            )
        for spec, records in groups.items():
            already = len(records) - written.get(spec.table, 0) - refused.get(spec.table, 0)
            ROWS_UNCHANGED.inc(already, table=spec.table)
        for table, n in written.items():
            ROWS_WRITTEN.inc(n, table=table)
        if stored:
            ROWS_WRITTEN.inc(stored, table=DEAD_LETTERS.table)

    def _retention(self) -> None:
        now = time.monotonic()
        try:
            conn = self.writer.connect()
            apply_retention(conn, self.config.retention_days.by_table(), self.edition)
        except psycopg.Error as exc:
            self.writer.reset()
            log.warning(
                "retention job failed; will try again",
                extra={"step": self.step_id, "error": str(exc).strip()},
            )
            self._next_retention = now + min(self.config.retention_interval, 60.0)
            return
        self._next_retention = now + self.config.retention_interval


class BackgroundWriter:
    """One process's database writer thread for a sink: a bounded queue in front of a
    :class:`TimescalePartition`.

    :meth:`submit` queues records and returns at once, unless ``buffer_rows``
    records are already waiting: then it blocks until the writer has caught
    up (backpressure, counted in ``streamforge_timescale_buffer_full_total``).
    The thread takes everything queued, up to ``batch_rows`` at a time, and
    writes it with the partition's retry loop. :meth:`drain` returns once
    every record submitted so far is committed. A writer that failed for
    good (``give_up_after``, or a bug) re-raises its error from the next
    :meth:`submit` or :meth:`drain`, which stops the dataflow.
    """

    def __init__(self, partition: TimescalePartition, buffer_rows: int) -> None:
        self.partition = partition
        self.buffer_rows = buffer_rows
        self._queue: deque[tuple[list[Output], int]] = deque()
        self._queued = 0  # records in the queue
        self._writing = 0  # records being written
        self._error: BaseException | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer thread."""
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="streamforge-timescale-writer", daemon=True
            )
            self._thread.start()

    def submit(self, items: list[Output]) -> None:
        """Queue ``(kind, records)`` outputs; blocks while the buffer is full."""
        count = count_outputs(items)
        if not count:
            return
        with self._cond:
            self._raise_if_failed()
            if self._queued >= self.buffer_rows:
                BUFFER_FULL.inc()
                while self._queued >= self.buffer_rows and self._error is None:
                    self._cond.wait(1.0)
                self._raise_if_failed()
            self._queue.append((items, count))
            self._queued += count
            QUEUED.set(self._queued)
            self._cond.notify_all()

    def drain(self) -> None:
        """Return once everything submitted so far is committed (raises a writer's failure)."""
        with self._cond:
            while (self._queued or self._writing) and self._error is None:
                self._cond.wait(1.0)
            self._raise_if_failed()

    def close(self) -> None:
        """Drain, stop the thread and close the connection."""
        try:
            self.drain()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._thread is not None:
                self._thread.join(timeout=30.0)
            self.partition.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"TimescaleDB writer failed: {self._error}") from self._error

    def _take(self) -> list[Output] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            batch: list[Output] = []
            taken = 0
            limit = self.partition.config.batch_rows
            while self._queue and taken < limit:
                items, count = self._queue.popleft()
                batch.extend(items)
                taken += count
            self._queued -= taken
            self._writing = taken
            QUEUED.set(self._queued)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self.partition.write_batch(batch)
            except BaseException as exc:  # reported to the dataflow by submit/drain
                log.error(
                    "timescale writer stopped",
                    extra={"step": self.partition.step_id, "error": str(exc)},
                )
                with self._cond:
                    self._error = exc
                    self._writing = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self._writing = 0
                self._cond.notify_all()


class _SharedBackgroundWriter:
    """One :class:`BackgroundWriter` per sink object per process, started on first use."""

    def __init__(self, sink: TimescaleSink) -> None:
        self._sink = sink
        self._writer: BackgroundWriter | None = None
        self._users = 0
        self._lock = threading.Lock()

    def get(self, step_id: str, retention: bool, use: bool = True) -> BackgroundWriter:
        """The process's writer (connecting on first use); ``retention``: it runs the job.

        ``use``: a partition will use it (and :meth:`release` it when closed).
        """
        with self._lock:
            if self._writer is None:
                sink = self._sink
                # Connects here, in the dataflow's thread, so start-up logs come first.
                partition = TimescalePartition(sink.config, sink.url, step_id, 1)
                self._writer = BackgroundWriter(partition, sink.config.buffer_rows)
                self._writer.start()
            if retention:
                self._writer.partition.run_retention()
            if use:
                self._users += 1
            return self._writer

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._writer is not None:
                writer, self._writer = self._writer, None
                writer.close()


class TimescaleSinkPartition(StatefulSinkPartition[Output, None]):
    """One of the sink's partitions; ``snapshot()`` waits for the process's (shared) writer.

    The resume state is ``None``: the replay after a crash comes from the
    inputs' snapshots, and writes are idempotent.
    """

    def __init__(self, shared: _SharedBackgroundWriter, writer: BackgroundWriter):
        self._shared = shared
        self.writer = writer

    def write_batch(self, values: list[Output]) -> None:
        """Queue ``(kind, records)`` outputs (blocks while the buffer is full)."""
        self.writer.submit(values)

    def snapshot(self) -> None:
        """Wait until every record queued so far is committed: the epoch's rows are durable."""
        self.writer.drain()

    def close(self) -> None:
        """Drain and, for the last partition of this process, close the connection."""
        try:
            self._shared.release()
        except Exception as exc:  # Bytewax calls close() from a destructor: log, not raise
            log.error("timescale sink closed with unwritten records", extra={"error": str(exc)})


class TimescaleSink(FixedPartitionedSink[Output, None]):
    """Writes routed ``(key, (kind, records))`` outputs to TimescaleDB tables; see the module
    docstring.

    ``config.database_url`` wins over ``settings.database_url``.
    """

    def __init__(
        self, config: TimescaleSinkConfig | None = None, settings: Settings | None = None
    ) -> None:
        self.config = config or TimescaleSinkConfig()
        self.settings = settings or Settings()
        self.url = self.config.database_url or self.settings.database_url
        self._shared = _SharedBackgroundWriter(self)

    def list_parts(self) -> list[str]:
        """The aligned partitions of :mod:`connectors.runtime.routing`.

        Called by every worker at start-up: the process's writer connects
        here (applying migrations), so the tables exist before the first
        record, as a user starting a flow expects.
        """
        self._shared.get("timescale", retention=False, use=False)
        return list(ALIGNED_PARTITION_NAMES)

    def part_fn(self, item_key: str) -> int:
        """The partition on the worker that processed the item's bucket."""
        return aligned_partition(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> TimescaleSinkPartition:
        """A partition sharing this process's writer thread and connection.

        The process that holds the first partition runs the retention job.
        """
        writer = self._shared.get(step_id, retention=for_part == ALIGNED_PARTITION_NAMES[0])
        return TimescaleSinkPartition(self._shared, writer)

    def sync_writer(self, step_id: str, worker_index: int = 0) -> TimescalePartition:
        """A synchronous writer on this sink's config: ``write_batch`` returns once committed.

        For tests, benchmarks and tools outside a dataflow.
        """
        return TimescalePartition(self.config, self.url, step_id, worker_index)
