"""Where a flow's output goes: the sink interface and the built-in sinks.

Every flow produces one stream of ``(kind, records)`` items, where ``kind`` is
an :data:`schemas.sinks.OutputKind` (``"telemetry"``, ``"alarm"``, ...) and
``records`` a *chunk*: a list of records of that kind from
:mod:`schemas.models` (a single record is accepted too). Chunks, not one item
per record, because every item crossing a Bytewax operator costs ~1 µs of
routing: the series step emits one chunk per kind per activation, so a
reading and its outputs cost a fraction of an item each. A sink is any
Bytewax sink of such items (:func:`iter_outputs` walks them record by
record); :func:`make_sink` builds one from its config.
Kafka and TimescaleDB sinks plug in here the same way as ``stdout``::

    from bytewax.testing import run_main
    from flows.ingest import build_flow
    from schemas.config import PipelineConfig
    run_main(build_flow(PipelineConfig()))   # simulator -> readable stdout lines
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TextIO

from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition

from flows.metrics import counter
from schemas.models import (
    Alarm,
    AnomalyScore,
    DeadLetter,
    Event,
    LogRecord,
    Reading,
    Rollup,
    to_json,
)
from schemas.settings import Settings
from schemas.sinks import SinkConfig

Output = tuple[str, Any]
"""A flow output: (output kind, a list of records of that kind or one record)."""

RoutedOutput = tuple[str, Output]
"""An output keyed for a partitioned sink (Kafka, TimescaleDB): ``(bucket, output)``, the
key being the series bucket that made it (dead letters: their own key). The key picks
the sink partition (:mod:`flows.routing`)."""


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


class _WritePartition(StatelessSinkPartition[Output]):
    def __init__(self, write: Callable[[list[Output]], None]) -> None:
        self._write = write

    def write_batch(self, items: list[Output]) -> None:
        self._write(items)


class StdoutSink(DynamicSink[Output]):
    """Prints outputs as readable lines (``text``) or JSON lines (``json``)."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream

    def _write(self, items: list[Output]) -> None:
        out = self.stream or sys.stdout
        if self.fmt == "json":
            lines = [
                '{"kind":"' + kind + '","record":' + to_json(record).decode() + "}"
                for kind, record in iter_outputs(items)
            ]
        else:
            lines = [format_text(kind, record) for kind, record in iter_outputs(items)]
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WritePartition:
        """One partition per worker, all writing to the same stream."""
        return _WritePartition(self._write)


class NullSink(DynamicSink[Output]):
    """Counts outputs by kind and discards them (benchmarks)."""

    def _write(self, items: list[Output]) -> None:
        OUTPUTS.inc(count_outputs(items), sink="null")

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WritePartition:
        """One partition per worker."""
        return _WritePartition(self._write)


def make_sink(config: SinkConfig, settings: Settings | None = None) -> Sink[Output]:
    """Build the Bytewax sink described by one sink config."""
    settings = settings or Settings()
    if config.type == "stdout":
        return StdoutSink(config.format)
    if config.type == "null":
        return NullSink()
    if config.type == "kafka":
        from connectors.kafka_sink import make_kafka_sink

        return make_kafka_sink(config, settings)
    if config.type == "timescale":
        from connectors.timescale import TimescaleSink

        return TimescaleSink(config, settings)
    raise ValueError(f"unknown sink type {config.type!r}")
