"""Configuration models of the local sinks: readable lines on stdout, and the null sink.

>>> StdoutSinkConfig().format, "rollup" in StdoutSinkConfig().kinds
('text', True)
>>> "anomaly_score" in StdoutSinkConfig().kinds   # one per telemetry value: too many to read
False
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.kinds import ALL_OUTPUT_KINDS, OutputKind

_READABLE_KINDS: tuple[OutputKind, ...] = (
    "telemetry",
    "event",
    "alarm",
    "log",
    "rollup",
    "dead_letter",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StdoutSinkConfig(_Strict):
    """Readable lines on standard output (alarms and events highlighted) or JSON lines."""

    type: Literal["stdout"] = "stdout"
    format: Literal["text", "json"] = "text"
    kinds: list[OutputKind] = Field(default_factory=lambda: list(_READABLE_KINDS))


class NullSinkConfig(_Strict):
    """Discards everything (benchmarks)."""

    type: Literal["null"] = "null"
    kinds: list[OutputKind] = Field(default_factory=lambda: list(ALL_OUTPUT_KINDS))
