"""The local sinks: readable lines (or JSON lines) on standard output, and a null sink.

>>> import io
>>> from datetime import UTC, datetime
>>> from schemas.models import Reading
>>> out = io.StringIO()
>>> reading = Reading(device="press-1", metric="rpm", value=1200,
...                   ts=datetime(2026, 1, 1, tzinfo=UTC))
>>> StdoutSink("json", out)._write([("telemetry", [reading])])
>>> out.getvalue()[:60]
'{"kind":"telemetry","record":{"device":"press-1","metric":"r'
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.runtime.outputs import OUTPUTS, Output, count_outputs, format_text, iter_outputs
from schemas.models import to_json


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
