"""How each record becomes a row: the tables, their columns and their merge SQL.

>>> from datetime import datetime, timezone
>>> from schemas.models import Reading
>>> r = Reading("press-1", "temperature", datetime(2026, 1, 1, tzinfo=timezone.utc), 71.5)
>>> spec = spec_for(r)
>>> spec.table, spec.to_row(r)[4:7]
('readings', (71.5, None, None))

A :class:`TableSpec` says how a batch of one record type is written: binary
``COPY`` into a temporary staging table (``stage_<table>``, created per
connection, emptied at every commit), then one or more ``INSERT ... SELECT
... ON CONFLICT`` statements that merge it into the real tables. For the
tables that only ever ignore a known key (``direct``), the writer first
tries a ``COPY`` straight into the table, which skips the staging table's
extra pass, and falls back to staging when the unique index reports a key
already stored (a replay). Either way, the natural keys are what make writes idempotent:

========================  ====================================  =====================
table                     natural key                           on conflict
========================  ====================================  =====================
readings                  (tenant, device, metric, ts)          do nothing
anomaly_scores            (tenant, device, metric, ts)          do nothing
events                    (tenant, device, metric, ts)          do nothing
rollups                   (tenant, device, metric, tier,        higher revision wins
                          window_start)
alarm_transitions         (alarm_id, seq)                       do nothing
alarms                    (id)                                  higher seq wins
logs                      (tenant, device, ts, fingerprint)     do nothing
dead_letters              (received_at, fingerprint)            do nothing
========================  ====================================  =====================
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.models import (
    Alarm,
    AnomalyScore,
    DeadLetter,
    Event,
    LogRecord,
    Reading,
    Rollup,
)

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: hashed by identity, cheaply
class TableSpec:
    """How one record type is staged and merged.

    ``table`` names the staging table's model (``stage_<table>``);
    ``merges`` are ``(target table, SQL)`` pairs run after the COPY, whose
    row counts are the rows written to that target. ``direct`` says a plain
    ``COPY`` into ``table`` is equivalent when no key exists yet (the merge
    is a lone ``ON CONFLICT DO NOTHING`` into ``table``).
    """

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    to_row: Callable[[Any], Row]
    merges: tuple[tuple[str, str], ...]
    direct: bool = False

    @property
    def stage(self) -> str:
        """Name of the temporary staging table."""
        return f"stage_{self.table}"

    def create_stage_sql(self) -> str:
        """DDL of the staging table (per connection; emptied at every commit)."""
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
            f"(LIKE {self.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )

    def copy_sql(self, direct: bool = False) -> str:
        """The binary COPY into the staging table, or into the table itself if ``direct``."""
        target = self.table if direct else self.stage
        return f"COPY {target} ({', '.join(self.columns)}) FROM STDIN (FORMAT BINARY)"


def _fingerprint(*parts: str | None) -> bytes:
    text = "\x1f".join("\x00" if p is None else p for p in parts)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _split_value(value: Any) -> tuple[float | None, str | None, bool | None]:
    kind = type(value)
    if kind is float:
        return value, None, None
    if kind is bool:
        return None, None, value
    if kind is int:
        return float(value), None, None
    if value is None:
        return None, None, None
    return None, str(value), None


def reading_row(r: Reading) -> Row:
    """A telemetry reading as a ``readings`` row."""
    number, text, flag = _split_value(r.value)
    return (
        r.tenant, r.device, r.metric, r.ts, number, text, flag,
        r.quality, r.source, r.unit, r.attributes, r.score,
    )  # fmt: skip


def rollup_row(r: Rollup) -> Row:
    """A rollup as a ``rollups`` row."""
    return (
        r.tenant, r.device, r.metric, r.tier, r.window_start, r.window_end, r.count,
        r.min, r.max, r.sum, r.mean, r.var, r.first, r.last, r.first_ts, r.last_ts,
        r.revision,
    )  # fmt: skip


def event_row(e: Event) -> Row:
    """An event as an ``events`` row (values as JSON, so their type survives)."""
    return (e.tenant, e.device, e.metric, e.ts, e.previous, e.value, e.source)


def alarm_row(a: Alarm) -> Row:
    """An alarm transition as an ``alarm_transitions`` row (also feeds ``alarms``)."""
    return (
        a.id, a.seq, a.tenant, a.device, a.metric, a.rule, a.kind, a.severity, a.state,
        a.transition, a.ts, a.raised_at, a.value, a.threshold, a.message,
        a.acknowledged_at, a.acknowledged_by, a.cleared_at, a.comment,
        a.priority, a.shelved_until, a.chattering,
    )  # fmt: skip


def log_row(g: LogRecord) -> Row:
    """A device log line as a ``logs`` row."""
    fp = _fingerprint(g.metric, g.level, g.component, g.message)
    return (g.tenant, g.device, g.ts, fp, g.level, g.component, g.message, g.metric)


def dead_letter_row(d: DeadLetter) -> Row:
    """A dead letter as a ``dead_letters`` row."""
    fp = _fingerprint(
        d.received_at.isoformat(), d.source, d.origin, d.step, d.reason, d.payload,
        d.payload_encoding, d.tenant,
    )  # fmt: skip
    return (
        d.received_at, fp, d.tenant, d.source, d.origin, d.step, d.reason, d.payload,
        d.payload_encoding, d.payload_size, d.payload_sha256,
    )  # fmt: skip


def score_row(s: AnomalyScore) -> Row:
    """An anomaly score as an ``anomaly_scores`` row."""
    return (s.tenant, s.device, s.metric, s.ts, s.value, s.score, s.detector, s.anomalous)


def _insert(table: str, columns: tuple[str, ...], stage: str, tail: str) -> str:
    cols = ", ".join(columns)
    return f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} {tail}"


def _set_all(columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    return ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)


def _spec(
    table: str,
    columns_types: str,
    to_row: Callable[[Any], Row],
    key: tuple[str, ...],
) -> TableSpec:
    """A spec whose merge ignores rows already present (``ON CONFLICT DO NOTHING``)."""
    pairs = [c.split(":") for c in columns_types.split()]
    columns = tuple(p[0] for p in pairs)
    types = tuple(p[1] for p in pairs)
    merge = _insert(table, columns, f"stage_{table}", f"ON CONFLICT ({', '.join(key)}) DO NOTHING")
    return TableSpec(table, columns, types, to_row, ((table, merge),), direct=True)


READINGS = _spec(
    "readings",
    "tenant:text device:text metric:text ts:timestamptz value:float8 value_text:text "
    "value_bool:bool quality:text source:text unit:text attributes:jsonb score:float8",
    reading_row,
    ("tenant", "device", "metric", "ts"),
)

ANOMALY_SCORES = _spec(
    "anomaly_scores",
    "tenant:text device:text metric:text ts:timestamptz value:float8 score:float8 "
    "detector:text anomalous:bool",
    score_row,
    ("tenant", "device", "metric", "ts"),
)

EVENTS = _spec(
    "events",
    "tenant:text device:text metric:text ts:timestamptz previous:jsonb value:jsonb source:text",
    event_row,
    ("tenant", "device", "metric", "ts"),
)

LOGS = _spec(
    "logs",
    "tenant:text device:text ts:timestamptz fingerprint:bytea level:text component:text "
    "message:text metric:text",
    log_row,
    ("tenant", "device", "ts", "fingerprint"),
)

DEAD_LETTERS = _spec(
    "dead_letters",
    "received_at:timestamptz fingerprint:bytea tenant:text source:text origin:text "
    "step:text reason:text payload:text payload_encoding:text payload_size:int8 "
    "payload_sha256:text",
    dead_letter_row,
    ("received_at", "fingerprint"),
)

_ROLLUP_KEY = ("tenant", "device", "metric", "tier", "window_start")
_ROLLUP_BASE = _spec(
    "rollups",
    "tenant:text device:text metric:text tier:text window_start:timestamptz "
    "window_end:timestamptz count:int8 min:float8 max:float8 sum:float8 mean:float8 "
    "var:float8 first:float8 last:float8 first_ts:timestamptz last_ts:timestamptz "
    "revision:int4",
    rollup_row,
    _ROLLUP_KEY,
)
# A correction (higher revision) replaces the row; a replay of the same or an
# older revision changes nothing. DISTINCT ON keeps one row per key from the
# batch: ON CONFLICT DO UPDATE may not touch a row twice in one statement.
ROLLUPS = TableSpec(
    "rollups",
    _ROLLUP_BASE.columns,
    _ROLLUP_BASE.types,
    rollup_row,
    (
        (
            "rollups",
            f"INSERT INTO rollups ({', '.join(_ROLLUP_BASE.columns)}) "
            f"SELECT DISTINCT ON ({', '.join(_ROLLUP_KEY)}) {', '.join(_ROLLUP_BASE.columns)} "
            f"FROM stage_rollups ORDER BY {', '.join(_ROLLUP_KEY)}, revision DESC "
            f"ON CONFLICT ({', '.join(_ROLLUP_KEY)}) DO UPDATE SET "
            f"{_set_all(_ROLLUP_BASE.columns, _ROLLUP_KEY)} "
            "WHERE rollups.revision < EXCLUDED.revision",
        ),
    ),
)

_ALARM_BASE = _spec(
    "alarm_transitions",
    "alarm_id:text seq:int4 tenant:text device:text metric:text rule:text kind:text "
    "severity:text state:text transition:text ts:timestamptz raised_at:timestamptz "
    "value:jsonb threshold:float8 message:text acknowledged_at:timestamptz "
    "acknowledged_by:text cleared_at:timestamptz comment:text priority:text "
    "shelved_until:timestamptz chattering:bool",
    alarm_row,
    ("alarm_id", "seq"),
)
_ALARM_STATE_COLUMNS = ("id", *_ALARM_BASE.columns[1:])
# Every transition is kept in alarm_transitions; alarms holds, per alarm id,
# the transition with the highest seq seen so far.
ALARMS = TableSpec(
    "alarm_transitions",
    _ALARM_BASE.columns,
    _ALARM_BASE.types,
    alarm_row,
    (
        _ALARM_BASE.merges[0],
        (
            "alarms",
            f"INSERT INTO alarms ({', '.join(_ALARM_STATE_COLUMNS)}) "
            f"SELECT DISTINCT ON (alarm_id) {', '.join(_ALARM_BASE.columns)} "
            "FROM stage_alarm_transitions ORDER BY alarm_id, seq DESC "
            f"ON CONFLICT (id) DO UPDATE SET {_set_all(_ALARM_STATE_COLUMNS, ('id',))} "
            "WHERE alarms.seq < EXCLUDED.seq",
        ),
    ),
)

SPECS: tuple[TableSpec, ...] = (
    READINGS,
    ANOMALY_SCORES,
    ROLLUPS,
    EVENTS,
    ALARMS,
    LOGS,
    DEAD_LETTERS,
)
"""Every spec, in the order a transaction writes them."""

SPEC_BY_TYPE: dict[type, TableSpec] = {
    Reading: READINGS,
    AnomalyScore: ANOMALY_SCORES,
    Rollup: ROLLUPS,
    Event: EVENTS,
    Alarm: ALARMS,
    LogRecord: LOGS,
    DeadLetter: DEAD_LETTERS,
}
"""The spec of each record type."""


def spec_for(record: Any) -> TableSpec | None:
    """The spec that writes this record, or ``None`` for a type no table holds."""
    return SPEC_BY_TYPE.get(type(record))
