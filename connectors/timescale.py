"""TimescaleDB / PostgreSQL sink: every output kind into its table, idempotently.

>>> from bytewax.dataflow import Dataflow
>>> import bytewax.operators as op
>>> from bytewax.testing import TestingSource, run_main
>>> from datetime import datetime, timezone
>>> from schemas.models import Reading
>>> from schemas.sink_timescale import TimescaleSinkConfig
>>> r = Reading("press-1", "temperature", datetime(2026, 1, 1, tzinfo=timezone.utc), 71.5)
>>> flow = Dataflow("to_timescale")
>>> outputs = op.input("in", flow, TestingSource([("telemetry", r)]))
>>> op.output("db", outputs, TimescaleSink(TimescaleSinkConfig()))
>>> run_main(flow)  # doctest: +SKIP

Tables, keys and merge rules: :mod:`connectors.timescale_rows` and
``schemas/sql/``; the edition (plain PostgreSQL, Apache or full
TimescaleDB): :mod:`connectors.timescale_edition`; retention:
:mod:`connectors.timescale_retention`; options:
:class:`schemas.sink_timescale.TimescaleSinkConfig`.

**Partitions.** A :class:`TimescaleSink` is a Bytewax ``DynamicSink``: every
worker builds one :class:`TimescalePartition` with its own connection and
writes what reaches it. The first connection of each partition applies the
migrations (under an advisory lock, so workers do not race) and logs the
edition; worker 0 also runs the retention job every ``retention_interval``.

**Guarantee.** ``write_batch`` returns only once the batch is committed, so
when Bytewax snapshots an epoch (which it does after the epoch's items have
passed every output) those rows are durable. After a crash, Bytewax resumes
from the last snapshot and replays what followed it; every table has a
natural key and writes are ``INSERT ... ON CONFLICT`` (rollups and alarm
state: the higher revision / seq wins), so the replay adds no duplicate and
cannot roll a row back to an older version. Together: effectively exactly
once in the tables, provided the flow itself re-emits the same records on
replay. Nothing is buffered across ``write_batch`` calls, so there is no
buffer to lose or to bound beyond the batch Bytewax hands over; a batch is
split into transactions of at most ``batch_rows`` records.

**The database going away.** A failed write is rolled back, the connection
dropped, and the whole batch retried on a new connection with exponential
backoff (``retry_initial`` doubling up to ``retry_max``), each failure
logged and counted. Meanwhile ``write_batch`` does not return, which holds
the dataflow (backpressure up to the inputs); when the database is back the
flow resumes by itself. With ``give_up_after`` set, the sink raises instead
after that long, stopping the dataflow. Records the database *refuses* (not
a connection problem: e.g. a NUL character in a text) are isolated and
stored as dead letters with the database's reason; one that cannot even be
stored that way is logged in full and counted in
``streamforge_timescale_lost_total``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.timescale_edition import Edition, edition_info
from connectors.timescale_retention import apply_retention, ensure_policies
from connectors.timescale_rows import DEAD_LETTERS, SPEC_BY_TYPE, TableSpec
from connectors.timescale_writer import Rejected, TimescaleWriter
from flows.logs import get_logger
from flows.metrics import counter, gauge
from flows.outputs import flatten_outputs
from schemas.migrate import migrate
from schemas.models import DeadLetter, to_json
from schemas.settings import Settings
from schemas.sink_timescale import TimescaleSinkConfig

Output = tuple[str, Any]

log = get_logger("connectors.timescale")

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


class TimescalePartition(StatelessSinkPartition[Output]):
    """One worker's writer: a connection, the retry loop and (worker 0) retention."""

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


class TimescaleSink(DynamicSink[Output]):
    """Writes ``(kind, record)`` outputs to TimescaleDB tables; see the module docstring.

    ``config.database_url`` wins over ``settings.database_url``.
    """

    def __init__(
        self, config: TimescaleSinkConfig | None = None, settings: Settings | None = None
    ) -> None:
        self.config = config or TimescaleSinkConfig()
        self.settings = settings or Settings()
        self.url = self.config.database_url or self.settings.database_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> TimescalePartition:
        """One partition (and one connection) per worker."""
        return TimescalePartition(self.config, self.url, step_id, worker_index)
