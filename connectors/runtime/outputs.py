"""The items a flow hands its sinks: ``(kind, records)`` outputs, and how to walk them.

Every flow produces one stream of ``(kind, records)`` items, where ``kind`` is
an :data:`schemas.kinds.OutputKind` (``"telemetry"``, ``"alarm"``, ...) and
``records`` a *chunk*: a list of records of that kind from
:mod:`schemas.models` (a single record is accepted too). Chunks, not one item
per record, because every item crossing a Bytewax operator has a fixed
routing cost: the series step emits one chunk per kind per activation, so a
reading and its outputs cost a fraction of an item each.
A sink is any Bytewax sink of such items; :func:`iter_outputs` walks them
record by record:

>>> outputs = [("telemetry", ["r1", "r2"]), ("alarm", "a1")]
>>> list(iter_outputs(outputs))
[('telemetry', 'r1'), ('telemetry', 'r2'), ('alarm', 'a1')]
>>> count_outputs(outputs)
3

:func:`format_text` is the line an operator reads (``make demo``'s stdout,
and the alarm follower :mod:`connectors.kafka.alerts`):

>>> from datetime import UTC, datetime
>>> from schemas.models import Reading
>>> reading = Reading(device="press-1", metric="temperature", value=21.5,
...                   ts=datetime(2026, 1, 1, tzinfo=UTC))
>>> format_text("telemetry", reading)
'2026-01-01T00:00:00.000Z     telemetry default/press-1 temperature=21.5 (good)'
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from connectors.runtime.metrics import counter
from schemas.models import (
    Alarm,
    AnomalyScore,
    DeadLetter,
    Event,
    LogRecord,
    Reading,
    Rollup,
)

Output = tuple[str, Any]
"""A flow output: (output kind, a list of records of that kind or one record)."""

RoutedOutput = tuple[str, Output]
"""An output keyed for a partitioned sink (Kafka, TimescaleDB): ``(bucket, output)``, the
key being the series bucket that made it (dead letters: their own key). The key picks
the sink partition (:mod:`connectors.runtime.routing`)."""


def route_by_kind(items: list[Output]) -> list[RoutedOutput]:
    """Outputs keyed by their kind: for a partitioned sink fed outside the flow (tests, tools)."""
    return [(kind, (kind, records)) for kind, records in items]


def iter_outputs(items: list[Output]) -> Iterator[tuple[str, Any]]:
    """Every ``(kind, record)`` pair of a batch of outputs, chunks unrolled, in order."""
    for kind, records in items:
        if type(records) is list:
            for record in records:
                yield kind, record
        else:
            yield kind, records


def flatten_outputs(items: list[Output]) -> list[tuple[str, Any]]:
    """:func:`iter_outputs` as a list (a ``flat_map_batch`` step for plain sinks)."""
    return list(iter_outputs(items))


def count_outputs(items: list[Output]) -> int:
    """How many records a batch of outputs holds."""
    return sum(len(r) if type(r) is list else 1 for _kind, r in items)


OUTPUTS = counter("streamforge_outputs_total", "Records a flow produced, by kind")


def _time(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_text(kind: str, record: Any) -> str:
    """One readable line for a record; alarms and events stand out."""
    if isinstance(record, Alarm):
        value = f" value={record.value}" if record.value is not None else ""
        return (
            f"{_time(record.ts)} *** ALARM {record.transition.upper()} *** "
            f"[{record.severity}] {record.tenant}/{record.device} rule={record.rule} "
            f"state={record.state}{value} -- {record.message}"
        )
    if isinstance(record, Event):
        return (
            f"{_time(record.ts)} >>> EVENT {record.tenant}/{record.device} "
            f"{record.metric}: {record.previous} -> {record.value}"
        )
    if isinstance(record, Reading):
        unit = f" {record.unit}" if record.unit else ""
        return (
            f"{_time(record.ts)}     {kind:<9} {record.tenant}/{record.device} "
            f"{record.metric}={record.value}{unit} ({record.quality})"
        )
    if isinstance(record, Rollup):
        return (
            f"{_time(record.window_start)}     rollup    {record.tenant}/{record.device} "
            f"{record.metric} [{record.tier}] n={record.count} mean={record.mean:.3f} "
            f"min={record.min:.3f} max={record.max:.3f} rev={record.revision}"
        )
    if isinstance(record, AnomalyScore):
        flag = " ANOMALOUS" if record.anomalous else ""
        return (
            f"{_time(record.ts)}     score     {record.tenant}/{record.device} "
            f"{record.metric}={record.value} score={record.score:.3f}{flag}"
        )
    if isinstance(record, LogRecord):
        return (
            f"{_time(record.ts)}     log       {record.tenant}/{record.device} "
            f"[{record.level}] {record.component}: {record.message}"
        )
    if isinstance(record, DeadLetter):
        return (
            f"{_time(record.received_at)} !!! DEAD LETTER from {record.source}"
            f" ({record.origin or '-'}) step={record.step}: {record.reason}"
        )
    return f"{kind}: {record!r}"
