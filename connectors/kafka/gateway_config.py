"""Configuration of the edge gateway's way to Kafka (``connectors/kafka/gateway.py``).

A pipeline config's ``gateway`` section, with every option at its default::

    gateway:
      id: null                  # the gateway's name in every message's headers; null = host name
      topic: streamforge.raw    # where readings and dead letters go (flows.ingest reads it)
      bootstrap_servers: null   # null = STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS
      partitions: 3             # of the topic, when the gateway creates it
      retention: 7d             # of the topic, when the gateway creates it
      readings_per_message: 1000  # a device's readings are sent as JSON arrays of up to this many
      spool_partitions: 1       # spool directories (each with its own forwarder)
      forward_batch: 10000      # records read from the spool per send to Kafka
      forward_timeout: 30s      # a send not confirmed by then is retried from the spool
      linger: 10ms
      compression: lz4          # lz4 | zstd | snappy | gzip | none
      producer_config: {}       # extra librdkafka settings (security.protocol, ...)
      spool:                    # see connectors/runtime/spool.py
        path: streamforge-spool
        max_bytes: 1GiB
        max_age: null
        when_full: block        # block | drop_oldest
        segment_bytes: 16MiB
        fsync: true

>>> GatewayConfig(spool={"path": "/var/lib/streamforge/spool"}).spool.max_bytes
1073741824
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.kafka.sink_config import Retention
from connectors.runtime.spool import SpoolConfig
from schemas.durations import parse_duration


class GatewayConfig(BaseModel):
    """How ``flows.gateway`` hands readings to Kafka: a spool on disk, then the raw topic."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="the gateway's name, sent in every message's 'gateway' header; "
        "null = the host name",
    )
    topic: str = Field(
        "streamforge.raw",
        min_length=1,
        max_length=249,
        description="the raw topic: readings and dead letters; flows.ingest reads it",
    )
    bootstrap_servers: str | None = None
    partitions: int = Field(3, ge=1, le=10_000)
    retention: Retention = "7d"
    readings_per_message: int = Field(1000, ge=1, le=10_000)
    spool_partitions: int = Field(1, ge=1, le=256)
    forward_batch: int = Field(10_000, ge=1, le=1_000_000)
    forward_timeout: float = Field(30.0, ge=1.0, le=3600.0)
    linger: float = Field(0.010, ge=0.0, le=5.0)
    compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = "lz4"
    producer_config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)

    @field_validator("forward_timeout", "linger", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)
