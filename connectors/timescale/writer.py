"""One database connection and the transaction that writes a batch of records.

>>> from datetime import datetime, timezone
>>> from schemas.models import Reading
>>> from connectors.timescale.rows import READINGS
>>> writer = TimescaleWriter("postgresql://streamforge:streamforge@127.0.0.1:5433/streamforge")
>>> r = Reading("press-1", "temperature", datetime(2026, 1, 1, tzinfo=timezone.utc), 71.5)
>>> writer.write({READINGS: [r]})  # doctest: +SKIP
{'readings': 1}
>>> writer.write({READINGS: [r]})  # the same again: nothing new  # doctest: +SKIP
{'readings': 0}

Without a database (nothing listens on port 1) the error reaches the
caller and the writer holds no connection; the next write reconnects:

>>> offline = TimescaleWriter("postgresql://streamforge@127.0.0.1:1/streamforge")
>>> try:
...     offline.write({READINGS: [r]})
... except psycopg.OperationalError:
...     print("refused; connection:", offline.conn)
refused; connection: None

:meth:`TimescaleWriter.write` stages every table's records with one binary
``COPY`` each and merges them with ``INSERT ... ON CONFLICT``
(:mod:`connectors.timescale.rows`), all in one transaction: a batch is
written completely or not at all. It does not retry: connection errors
propagate to the caller (the sink), which reconnects with backoff.
:meth:`TimescaleWriter.write_isolating` also copes with records the database
refuses (a text with a NUL character, say): it splits the batch in halves
until the bad records stand alone, writes everything else and returns the
refused records with the reason.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from connectors.timescale.rows import SPECS, TableSpec

DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,  # SQLSTATE 22: bad text encoding, out-of-range values, ...
    psycopg.IntegrityError,  # SQLSTATE 23: a NULL where none is allowed, ...
    # Raised on our side while dumping a row, before the server sees it.
    TypeError,
    ValueError,
    AttributeError,
    OverflowError,
    struct.error,
)
"""Errors caused by the records themselves: retrying the same rows cannot help."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the database refused, with the table and the reason."""

    table: str
    record: Any
    error: str


class TimescaleWriter:
    """Writes batches of records through one connection, opened on demand.

    ``on_connect`` runs on every new connection before the staging tables are
    created (the sink applies migrations and detects the edition there).
    ``direct_copy`` enables the fast path of :mod:`connectors.timescale.rows`
    (COPY straight into the table, staging only after a key conflict).
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        application_name: str = "streamforge-sink",
        on_connect: Callable[[psycopg.Connection], None] | None = None,
        direct_copy: bool = True,
    ) -> None:
        self.url = url
        self.direct_copy = direct_copy
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self.on_connect = on_connect
        self.conn: psycopg.Connection | None = None

    def connect(self) -> psycopg.Connection:
        """The open connection, or a new one (raises ``psycopg.OperationalError``)."""
        if self.conn is not None and not self.conn.closed:
            return self.conn
        self.conn = None
        conn = psycopg.connect(
            self.url,
            # libpq takes whole seconds and treats values below 2 as 2.
            connect_timeout=max(2, math.ceil(self.connect_timeout)),
            application_name=self.application_name,
            # Notice a server that vanished without closing the socket.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            if self.on_connect is not None:
                self.on_connect(conn)
            for spec in SPECS:
                conn.execute(spec.create_stage_sql().encode())
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return conn

    def close(self) -> None:
        """Close the connection (the next write opens a new one)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def reset(self) -> None:
        """After an error: roll back if the connection still works, else drop it."""
        conn = self.conn
        if conn is None or conn.closed:
            self.conn = None
            return
        try:
            conn.rollback()
        except psycopg.Error:
            self.close()

    def write(self, groups: Mapping[TableSpec, Sequence[Any]]) -> dict[str, int]:
        """Write every group in one transaction; rows inserted or updated per table.

        Records already stored (same natural key) count as zero. Raises on any
        error, after rolling the transaction back.
        """
        conn = self.connect()
        written: dict[str, int] = {}
        try:
            with conn.cursor() as cur:
                # Acknowledged means durable, whatever the server's default: with
                # synchronous_commit off, a database crash loses commits the sink
                # already reported, after the flow's snapshot moved past them.
                # SET LOCAL: this transaction only, so it also holds behind a
                # transaction-pooling proxy.
                cur.execute(b"SET LOCAL synchronous_commit = on")
                for spec in SPECS:
                    records = groups.get(spec)
                    if not records:
                        continue
                    if self.direct_copy and spec.direct and self._copy_direct(cur, spec, records):
                        written[spec.table] = written.get(spec.table, 0) + len(records)
                        continue
                    self._copy(cur, spec.copy_sql(), spec, records)
                    for target, sql in spec.merges:
                        cur.execute(sql.encode())
                        written[target] = written.get(target, 0) + max(cur.rowcount, 0)
            conn.commit()
        except BaseException:
            self.reset()
            raise
        return written

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], sql: str, spec: TableSpec, records: Sequence[Any]) -> None:
        to_row = spec.to_row
        with cur.copy(sql.encode()) as copy:
            copy.set_types(list(spec.types))
            write_row = copy.write_row
            for record in records:
                write_row(to_row(record))

    def _copy_direct(
        self, cur: psycopg.Cursor[Any], spec: TableSpec, records: Sequence[Any]
    ) -> bool:
        """COPY straight into the table; False (and nothing written) if a key exists."""
        # A savepoint, not conn.transaction(): that would commit on its own
        # when it opens the batch's transaction.
        cur.execute(b"SAVEPOINT direct_copy")
        try:
            self._copy(cur, spec.copy_sql(direct=True), spec, records)
        except psycopg.errors.UniqueViolation:
            cur.execute(b"ROLLBACK TO SAVEPOINT direct_copy")
            return False
        cur.execute(b"RELEASE SAVEPOINT direct_copy")
        return True

    def write_isolating(
        self, groups: Mapping[TableSpec, Sequence[Any]]
    ) -> tuple[dict[str, int], list[Rejected]]:
        """Like :meth:`write`, but records the database refuses are returned, not raised.

        Only :data:`DATA_ERRORS` are isolated; connection and other errors
        still raise (rows committed before that are kept: writes are
        idempotent, so the caller simply retries the whole batch).
        """
        try:
            return self.write(groups), []
        except DATA_ERRORS:
            pass
        written: dict[str, int] = {}
        rejected: list[Rejected] = []
        for spec, records in groups.items():
            if records:
                self._bisect(spec, list(records), written, rejected)
        return written, rejected

    def _bisect(
        self,
        spec: TableSpec,
        records: list[Any],
        written: dict[str, int],
        rejected: list[Rejected],
    ) -> None:
        try:
            counts = self.write({spec: records})
        except DATA_ERRORS as exc:
            if len(records) == 1:
                reason = f"{type(exc).__name__}: {exc}".strip()
                rejected.append(Rejected(spec.table, records[0], reason))
                return
            middle = len(records) // 2
            self._bisect(spec, records[:middle], written, rejected)
            self._bisect(spec, records[middle:], written, rejected)
            return
        for table, n in counts.items():
            written[table] = written.get(table, 0) + n
