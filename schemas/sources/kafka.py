"""Configuration of the Kafka raw-readings source (filled in by the Kafka work)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class KafkaSourceConfig(BaseModel):
    """Raw readings from a Kafka topic. See ``connectors/kafka_source.py``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["kafka"] = "kafka"
    name: str = "kafka"
    topic: str = "streamforge.raw"
