"""Kafka sink and source configs: topic names, retention, validation, the sample."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.kafka.producer import message_key, producer_config
from connectors.kafka.sink_config import KafkaSinkConfig, retention_ms
from connectors.kafka.source_config import KafkaSourceConfig
from flows.config import load_pipeline_config
from schemas.models import DeadLetter, Reading
from tests.support.kafka_tools import at, one_of_each

SAMPLE = Path(__file__).parents[2] / "connectors" / "kafka" / "sample.yaml"


def test_default_topic_names() -> None:
    config = KafkaSinkConfig()
    assert [config.topic_for(k) for k in config.kinds] == [
        "streamforge.telemetry",
        "streamforge.events",
        "streamforge.alarms",
        "streamforge.logs",
        "streamforge.rollups",
        "streamforge.anomaly_scores",
        "streamforge.dead_letters",
    ]
    assert KafkaSourceConfig().topic == "streamforge.raw"


def test_topic_overrides_partitions_and_retention() -> None:
    config = KafkaSinkConfig.model_validate(
        {
            "topic_prefix": "a.",
            "partitions": 6,
            "retention": "12h",
            "topics": {"alarm": {"name": "alarms-x", "partitions": 2, "retention": "forever"}},
        }
    )
    specs = {s.kind: s for s in config.topic_specs()}
    assert (specs["alarm"].name, specs["alarm"].partitions, specs["alarm"].retention_ms) == (
        "alarms-x",
        2,
        -1,
    )
    assert (specs["log"].name, specs["log"].partitions, specs["log"].retention_ms) == (
        "a.logs",
        6,
        12 * 3_600_000,
    )
    assert specs["log"].configs() == {"retention.ms": str(12 * 3_600_000)}


def test_invalid_values_are_refused_with_the_field() -> None:
    with pytest.raises(ValidationError, match="retention"):
        KafkaSinkConfig(retention="soon")
    with pytest.raises(ValidationError, match="share the topic"):
        KafkaSinkConfig.model_validate({"topics": {"alarm": {"name": "streamforge.events"}}})
    with pytest.raises(ValidationError, match="compression"):
        KafkaSinkConfig.model_validate({"compression": "brotli"})
    with pytest.raises(ValidationError, match="idle_wait"):
        KafkaSourceConfig.model_validate({"idle_wait": "never"})
    with pytest.raises(ValueError, match="positive"):
        retention_ms("0s")


def test_producer_settings_are_idempotent_and_overridable() -> None:
    config = KafkaSinkConfig(linger="20ms", delivery_timeout="30s", compression="zstd")
    settings = producer_config(config, "b:9092", "c")
    assert settings["acks"] == "all" and settings["enable.idempotence"] is True
    assert (settings["linger.ms"], settings["message.timeout.ms"]) == (20, 30_000)
    assert settings["compression.type"] == "zstd"
    extra = KafkaSinkConfig(producer_config={"security.protocol": "SSL"})
    assert producer_config(extra, "b:9092", "c")["security.protocol"] == "SSL"


def test_keys_are_tenant_and_device() -> None:
    keys = {kind: message_key(record) for kind, record in one_of_each("press-1", "plant-a")}
    assert keys["telemetry"] == keys["alarm"] == keys["rollup"] == b"plant-a/press-1"
    assert keys["dead_letter"] == b"plant-a/plant/press-1"  # dead letters: tenant/origin
    anonymous = DeadLetter(at(0), "http", "bad", "x")
    assert message_key(anonymous) == b"default/http"
    assert message_key(Reading("d", "m", at(0), 1.0)) == b"default/d"


def test_sample_config_is_valid() -> None:
    config = load_pipeline_config(SAMPLE, env={})
    [source] = config.sources
    assert isinstance(source, KafkaSourceConfig) and source.defaults == {"tenant": "plant-a"}
    sink = config.sinks[0]
    assert isinstance(sink, KafkaSinkConfig)
    assert sink.topic_for("alarm") == "plant-a.alarms"
    assert {s.kind: s.retention_ms for s in sink.topic_specs()}["alarm"] == 365 * 86_400_000


def test_alarms_are_immediate_by_default_and_the_kinds_are_checked() -> None:
    assert KafkaSinkConfig().immediate_kinds == ["alarm"]
    assert KafkaSinkConfig(immediate_kinds=["alarm", "event"]).immediate_kinds == [
        "alarm",
        "event",
    ]
    with pytest.raises(ValidationError, match="immediate_kinds"):
        KafkaSinkConfig(immediate_kinds=["alarms"])
