"""Configuration of the Kafka sink (filled in by the Kafka work)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.kinds import ALL_OUTPUT_KINDS, OutputKind


class KafkaSinkConfig(BaseModel):
    """One Kafka topic per output kind. See ``connectors/kafka_sink.py``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["kafka"] = "kafka"
    kinds: list[OutputKind] = Field(default_factory=lambda: list(ALL_OUTPUT_KINDS))
    topic_prefix: str = "streamforge."
