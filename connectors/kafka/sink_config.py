"""Configuration of the Kafka sink (``connectors/kafka/sink.py``): one topic per output kind.

A pipeline config's sink entry, with every option at its default::

    sinks:
      - type: kafka
        kinds: [telemetry, event, alarm, log, rollup, anomaly_score, dead_letter]
        bootstrap_servers: null     # null = STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS
        topic_prefix: streamforge.  # topic = prefix + telemetry|events|alarms|logs|
                                    #   rollups|anomaly_scores|dead_letters
        topics: {}                  # per kind: {name, partitions, retention}
        flush: snapshot             # snapshot: flush at Bytewax snapshots; batch: every batch
        create_topics: true         # create missing topics at start
        partitions: 3               # of topics the sink creates
        replication_factor: 1
        retention: 7d               # a duration, or "forever"
        linger: 10ms                # producer batching delay
        immediate_kinds: [alarm]    # sent by a second producer that does not linger
        compression: lz4            # lz4 | zstd | snappy | gzip | none
        delivery_timeout: 2m        # librdkafka retries this long, then the sink raises
        max_buffered: 100000        # records the producer may hold unsent (bounded)
        producer_config: {}         # extra librdkafka settings (security.protocol, ...)

Every topic can be renamed or given its own partitions and retention::

    topics:
      alarm: {name: plant-a.alarms, retention: 365d}
      telemetry: {partitions: 12}

>>> config = KafkaSinkConfig(topics={"alarm": {"name": "a", "retention": "forever"}})
>>> config.topic_for("telemetry"), config.topic_for("anomaly_score"), config.topic_for("alarm")
('streamforge.telemetry', 'streamforge.anomaly_scores', 'a')
>>> [(t.name, t.retention_ms) for t in config.topic_specs() if t.kind == "alarm"]
[('a', -1)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from schemas.durations import parse_duration
from schemas.kinds import ALL_OUTPUT_KINDS, OutputKind

TOPIC_SUFFIX: dict[str, str] = {
    "telemetry": "telemetry",
    "event": "events",
    "alarm": "alarms",
    "log": "logs",
    "rollup": "rollups",
    "anomaly_score": "anomaly_scores",
    "dead_letter": "dead_letters",
}
"""The default topic name of each output kind, after ``topic_prefix``."""


def retention_ms(value: str | float | int) -> int:
    """Kafka's ``retention.ms`` of a duration (``"7d"``, ``"12h"``), -1 for ``"forever"``."""
    if isinstance(value, str) and value.strip().lower() == "forever":
        return -1
    ms = round(parse_duration(value) * 1000)
    if ms <= 0:
        raise ValueError(f"retention {value!r} must be positive (or 'forever')")
    return ms


def _retention_text(value: Any) -> str:
    retention_ms(value)  # refuses what Kafka could not be given, at config load
    return str(value)


Retention = Annotated[str, BeforeValidator(_retention_text)]
"""A topic retention in a config: a duration (``"7d"``) or ``"forever"``."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as the admin code creates it (see :mod:`connectors.kafka.admin`)."""

    name: str
    partitions: int
    replication_factor: int = 1
    retention_ms: int = 7 * 86_400_000
    kind: str | None = None

    def configs(self) -> dict[str, str]:
        """The topic-level configs the admin code sets."""
        return {"retention.ms": str(self.retention_ms)}


class KafkaTopicConfig(BaseModel):
    """Overrides for the topic of one output kind; unset fields take the sink's values."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=249)
    partitions: int | None = Field(None, ge=1, le=10_000)
    retention: Retention | None = None


def _alarms_only() -> list[OutputKind]:
    return ["alarm"]


class KafkaSinkConfig(BaseModel):
    """One Kafka topic per output kind. See ``connectors/kafka/sink.py``.

    Messages are keyed by ``tenant/device`` (dead letters: ``tenant/origin``)
    so a device's records land in one partition, in order; values are the
    record's JSON (:func:`schemas.models.to_json`); headers ``schema-version``
    and ``kind``. The producer is idempotent (``acks=all``); what it has not
    delivered after ``delivery_timeout`` (librdkafka retries until then)
    makes the sink raise, which stops the flow so recovery replays.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["kafka"] = "kafka"
    kinds: list[OutputKind] = Field(default_factory=lambda: list(ALL_OUTPUT_KINDS))
    topic_prefix: str = "streamforge."
    bootstrap_servers: str | None = None
    topics: dict[OutputKind, KafkaTopicConfig] = Field(default_factory=dict)
    flush: Literal["snapshot", "batch"] = "snapshot"
    create_topics: bool = True
    partitions: int = Field(3, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)
    retention: Retention = "7d"
    linger: float = Field(0.010, ge=0.0, le=5.0)
    immediate_kinds: list[OutputKind] = Field(
        default_factory=_alarms_only,
        description=(
            "kinds sent at once by a producer of their own (linger 0), not batched with "
            "the bulk: an alarm reaches consumers ~10 ms sooner; kinds not in `kinds` are ignored"
        ),
    )
    compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = "lz4"
    delivery_timeout: float = Field(120.0, gt=0.0, le=86_400.0)
    max_buffered: int = Field(100_000, ge=1, le=10_000_000)
    producer_config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    dead_letter_fallback: str = Field(
        "streamforge-dead-letters.jsonl",
        min_length=1,
        description="JSON-lines file for records Kafka refuses even as dead letters "
        "(relative to the flow's working directory)",
    )

    @field_validator("linger", "delivery_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _distinct_topics(self) -> KafkaSinkConfig:
        names = [self.topic_for(kind) for kind in self.kinds]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two output kinds share the topic(s) {duplicates}")
        return self

    def topic_for(self, kind: str) -> str:
        """The topic of one output kind."""
        override = self.topics.get(kind)  # type: ignore[call-overload]
        if override is not None and override.name:
            return override.name
        return self.topic_prefix + TOPIC_SUFFIX[kind]

    def topic_specs(self) -> list[TopicSpec]:
        """The topics of the configured kinds, with partitions and retention."""
        specs = []
        for kind in self.kinds:
            override = self.topics.get(kind) or KafkaTopicConfig()
            specs.append(
                TopicSpec(
                    name=self.topic_for(kind),
                    partitions=override.partitions or self.partitions,
                    replication_factor=self.replication_factor,
                    retention_ms=retention_ms(override.retention or self.retention),
                    kind=kind,
                )
            )
        return specs
