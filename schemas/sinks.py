"""Configuration models of the sinks a flow writes to."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.kinds import ALL_OUTPUT_KINDS, OutputKind
from schemas.sink_kafka import KafkaSinkConfig
from schemas.sink_timescale import TimescaleSinkConfig

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


SinkConfig = Annotated[
    StdoutSinkConfig | NullSinkConfig | KafkaSinkConfig | TimescaleSinkConfig,
    Field(discriminator="type"),
]

__all__ = [
    "ALL_OUTPUT_KINDS",
    "KafkaSinkConfig",
    "NullSinkConfig",
    "OutputKind",
    "SinkConfig",
    "StdoutSinkConfig",
    "TimescaleSinkConfig",
]
