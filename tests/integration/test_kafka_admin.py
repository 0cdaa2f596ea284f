"""Topic administration against the real broker; partitions checked with kcat too."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from connectors.kafka.admin import admin_client, describe_topic, ensure_topics
from connectors.kafka.sink_config import KafkaSinkConfig, TopicSpec
from tests.support.kafka_tools import delete_topics, unique

pytestmark = pytest.mark.kafka


@pytest.fixture
def names(kafka_bootstrap: str) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    delete_topics(kafka_bootstrap, created)


def kcat_partitions(bootstrap: str, topic: str) -> int:
    out = subprocess.run(
        ["kcat", "-b", bootstrap, "-L", "-J", "-t", topic],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout
    [meta] = json.loads(out)["topics"]
    return len(meta["partitions"])


def test_creates_topics_with_configured_partitions_and_retention(
    kafka_bootstrap: str, names: list[str]
) -> None:
    config = KafkaSinkConfig(
        topic_prefix=unique("sf-admin") + ".",
        kinds=["telemetry", "alarm", "dead_letter"],
        partitions=4,
        retention="2d",
        topics={"alarm": {"partitions": 2, "retention": "forever"}},
    )
    specs = config.topic_specs()
    names.extend(s.name for s in specs)
    admin = admin_client(kafka_bootstrap)

    result = ensure_topics(admin, specs)

    assert result == {s.name: "created" for s in specs}
    telemetry = describe_topic(admin, config.topic_for("telemetry"))
    alarms = describe_topic(admin, config.topic_for("alarm"))
    assert telemetry is not None and alarms is not None
    assert (telemetry.partitions, telemetry.retention_ms) == (4, 2 * 86_400_000)
    assert (alarms.partitions, alarms.retention_ms) == (2, -1)
    # The independent client sees the same partition counts.
    assert kcat_partitions(kafka_bootstrap, config.topic_for("telemetry")) == 4
    assert kcat_partitions(kafka_bootstrap, config.topic_for("alarm")) == 2


def test_ensure_is_idempotent_and_aligns_retention(kafka_bootstrap: str, names: list[str]) -> None:
    name = unique("sf-admin-idem")
    names.append(name)
    admin = admin_client(kafka_bootstrap)
    spec = TopicSpec(name, partitions=2, retention_ms=3_600_000)

    assert ensure_topics(admin, [spec]) == {name: "created"}
    assert ensure_topics(admin, [spec]) == {name: "exists"}

    longer = TopicSpec(name, partitions=2, retention_ms=7_200_000)
    assert ensure_topics(admin, [longer]) == {name: "retention updated"}
    info = describe_topic(admin, name)
    assert info is not None and info.retention_ms == 7_200_000

    # More partitions configured than the topic has: reported, never changed.
    wider = TopicSpec(name, partitions=5, retention_ms=7_200_000)
    assert ensure_topics(admin, [wider]) == {name: "exists (2 partitions < 5 configured)"}
    assert kcat_partitions(kafka_bootstrap, name) == 2


def test_describe_missing_topic_is_none(kafka_bootstrap: str) -> None:
    admin = admin_client(kafka_bootstrap)
    assert describe_topic(admin, unique("sf-admin-missing")) is None


def test_broker_refusal_names_the_reason(kafka_bootstrap: str, names: list[str]) -> None:
    name = unique("sf-admin-rf")
    names.append(name)
    admin = admin_client(kafka_bootstrap)
    # One broker cannot hold three replicas.
    with pytest.raises(Exception, match=r"(?i)replication factor"):
        ensure_topics(admin, [TopicSpec(name, partitions=1, replication_factor=3)])
