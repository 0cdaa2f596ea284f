"""Configuration models of the sinks a flow writes to."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

OutputKind = Literal[
    "telemetry", "event", "alarm", "log", "rollup", "anomaly_score", "dead_letter"
]
"""The streams a flow produces; every sink receives some or all of them."""

ALL_OUTPUT_KINDS: tuple[OutputKind, ...] = (
    "telemetry",
    "event",
    "alarm",
    "log",
    "rollup",
    "anomaly_score",
    "dead_letter",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StdoutSinkConfig(_Strict):
    """Readable lines on standard output (alarms and events highlighted) or JSON lines."""

    type: Literal["stdout"] = "stdout"
    format: Literal["text", "json"] = "text"
    kinds: list[OutputKind] = Field(
        default_factory=lambda: ["telemetry", "event", "alarm", "log", "rollup", "dead_letter"]
    )


class NullSinkConfig(_Strict):
    """Discards everything (benchmarks)."""

    type: Literal["null"] = "null"
    kinds: list[OutputKind] = Field(default_factory=lambda: list(ALL_OUTPUT_KINDS))


class KafkaSinkConfig(_Strict):
    """One Kafka topic per output kind (filled in by the Kafka sink work)."""

    type: Literal["kafka"] = "kafka"
    kinds: list[OutputKind] = Field(default_factory=lambda: list(ALL_OUTPUT_KINDS))
    topic_prefix: str = "streamforge."


class TimescaleSinkConfig(_Strict):
    """TimescaleDB / PostgreSQL tables (filled in by the TimescaleDB sink work)."""

    type: Literal["timescale"] = "timescale"
    kinds: list[OutputKind] = Field(default_factory=lambda: list(ALL_OUTPUT_KINDS))


SinkConfig = Annotated[
    StdoutSinkConfig | NullSinkConfig | KafkaSinkConfig | TimescaleSinkConfig,
    Field(discriminator="type"),
]
