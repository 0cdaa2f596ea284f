"""Configuration of the Kafka raw-readings source (``connectors/kafka/source.py``).

A pipeline config's source entry, with every option at its default::

    sources:
      - type: kafka
        name: kafka
        topic: streamforge.raw
        bootstrap_servers: null   # null = STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS
        start: earliest           # where a partition without recovery state starts
        format: auto              # auto | object | array | number (see flows/decode.py)
        defaults: {}              # fields payloads do not carry, e.g. {tenant: plant-a}
        batch_size: 1000          # messages per poll of one partition
        idle_wait: 10ms           # pause of a partition that had nothing to read
        create_topic: true        # create the topic if missing ...
        partitions: 3             # ... with this many partitions ...
        retention: 7d             # ... and this retention
        connect_timeout: 60s      # how long start-up waits for the topic's metadata
        stop_at_end: false        # tests: stop at the end offsets seen at start
        consumer_config: {}       # extra librdkafka settings (security.protocol, ...)

>>> KafkaSourceConfig(topic="plant-a.raw", idle_wait="50ms").idle_wait
0.05
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.kafka.sink_config import Retention
from schemas.durations import parse_duration


class KafkaSourceConfig(BaseModel):
    """Raw readings from a Kafka topic. See ``connectors/kafka/source.py``.

    Each Kafka partition is one Bytewax partition; its resume state is the
    next offset to read, kept by Bytewax recovery (no consumer-group
    commits). ``start`` applies only to a partition without resume state.
    ``format`` and ``defaults`` are handed to the decoder with every
    message, as for MQTT subscriptions.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["kafka"] = "kafka"
    name: str = "kafka"
    topic: str = Field("streamforge.raw", min_length=1, max_length=249)
    bootstrap_servers: str | None = None
    start: Literal["earliest", "latest"] = "earliest"
    format: Literal["auto", "object", "array", "number"] = "auto"
    defaults: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(1000, ge=1, le=100_000)
    idle_wait: float = Field(0.010, ge=0.0, le=10.0)
    create_topic: bool = True
    partitions: int = Field(3, ge=1, le=10_000)
    retention: Retention = "7d"
    connect_timeout: float = Field(60.0, gt=0.0, le=3600.0)
    stop_at_end: bool = False
    consumer_config: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("idle_wait", "connect_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)
