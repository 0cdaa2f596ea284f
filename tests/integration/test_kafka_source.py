"""The Kafka raw source against the real broker: full reads, resume, the ingest flow."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.sink_config import TopicSpec
from connectors.kafka.source import CONSUMER_ERRORS, KafkaPartition, KafkaRawSource
from connectors.kafka.source_config import KafkaSourceConfig
from flows.config import PipelineConfig
from flows.ingest import build_flow
from schemas.models import RawMessage, Reading
from schemas.settings import Settings
from tests.support.kafka_tools import delete_topics, produce_raw, unique

pytestmark = pytest.mark.kafka

N = 600


def readings(n: int, devices: int = 7) -> list[dict[str, Any]]:
    return [
        {
            "device": f"dev-{i % devices}",
            "metric": "temperature",
            "ts": f"2026-01-01T00:{(i // 60) % 60:02d}:{i % 60:02d}Z",
            "value": float(i),
        }
        for i in range(n)
    ]


@pytest.fixture
def raw_topic(kafka_bootstrap: str, settings: Settings) -> Iterator[str]:
    """A 3-partition topic preloaded with N readings (keyed by device)."""
    topic = unique("sf-raw")
    ensure_topics(admin_client(kafka_bootstrap), [TopicSpec(topic, partitions=3)])
    assert produce_raw(readings(N), topic, settings) == N
    yield topic
    delete_topics(kafka_bootstrap, [topic])


def config_for(topic: str, **kw: Any) -> KafkaSourceConfig:
    return KafkaSourceConfig(**{"topic": topic, "stop_at_end": True, "batch_size": 100, **kw})


def test_reads_every_partition_to_the_end(raw_topic: str, settings: Settings) -> None:
    source = KafkaRawSource(config_for(raw_topic, defaults={"tenant": "plant-a"}), settings)
    assert source.list_parts() == [f"{raw_topic}/0", f"{raw_topic}/1", f"{raw_topic}/2"]
    flow = Dataflow("kafka_source_test")
    out: list[RawMessage] = []
    op.output("out", op.input("kafka", flow, source), TestingSink(out))
    run_main(flow)

    assert len(out) == N
    assert all(type(m) is RawMessage and m.source == "kafka" and m.fmt == "auto" for m in out)
    assert all(m.defaults == {"tenant": "plant-a"} for m in out)
    # Every (partition, offset) exactly once, offsets contiguous from 0 per partition.
    origins = [m.origin or "" for m in out]
    assert len(set(origins)) == N
    by_partition: dict[str, list[int]] = {}
    for origin in origins:
        topic, partition, offset = origin.rsplit("/", 2)
        assert topic == raw_topic
        by_partition.setdefault(partition, []).append(int(offset))
    assert set(by_partition) == {"0", "1", "2"}
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    values = sorted(json.loads(m.payload)["value"] for m in out)
    assert values == [float(i) for i in range(N)]


def test_feeds_the_ingest_flow(raw_topic: str, settings: Settings) -> None:
    config = PipelineConfig(sources=[config_for(raw_topic)], alarms=[])
    out: list[tuple[str, Any]] = []
    flow = build_flow(config, settings, sinks=[TestingSink(out)])
    run_main(flow)
    telemetry = [r for kind, r in out if kind == "telemetry"]
    assert len(telemetry) == N
    assert all(type(r) is Reading and r.source == "kafka" for r in telemetry)
    assert sorted(r.value for r in telemetry) == [float(i) for i in range(N)]
    assert not [r for kind, r in out if kind == "dead_letter"]


def drain(part: KafkaPartition, timeout: float = 20.0) -> list[RawMessage]:
    got: list[RawMessage] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.extend(part.next_batch())
        except StopIteration:
            return got
        time.sleep(0.001)
    raise AssertionError(f"partition did not reach its end offset; read {len(got)}")


def test_resumes_from_the_snapshot_without_rereading(raw_topic: str, settings: Settings) -> None:
    source = KafkaRawSource(config_for(raw_topic, batch_size=10), settings)
    part_name = f"{raw_topic}/1"

    first = source.build_part("in", part_name, None)
    batch: list[RawMessage] = []
    while not batch:
        batch = first.next_batch()
    resume = first.snapshot()
    first.close()
    assert resume == len(batch)  # next offset = offsets 0..len-1 were read
    assert [m.origin for m in batch] == [f"{part_name}/{i}" for i in range(len(batch))]

    second = source.build_part("in", part_name, resume)
    rest = drain(second)
    end = second.snapshot()
    second.close()
    assert rest[0].origin == f"{part_name}/{resume}"
    assert end == len(batch) + len(rest)
    seen = {m.origin for m in batch} | {m.origin for m in rest}
    assert len(seen) == len(batch) + len(rest)  # nothing read twice

    # Resuming at the end reads nothing at all.
    third = source.build_part("in", part_name, end)
    with pytest.raises(StopIteration):
        third.next_batch()
    third.close()


def test_start_latest_skips_what_is_already_there(raw_topic: str, settings: Settings) -> None:
    source = KafkaRawSource(config_for(raw_topic, start="latest"), settings)
    part = source.build_part("in", f"{raw_topic}/0", None)
    with pytest.raises(StopIteration):
        part.next_batch()
    position = part.snapshot()
    assert position is not None and position > 0
    part.close()


def test_broker_down_is_logged_and_retried_not_raised() -> None:
    config = KafkaSourceConfig(
        topic=unique("sf-raw-down"),
        bootstrap_servers="127.0.0.1:1",
        consumer_config={"socket.connection.setup.timeout.ms": 1000},
    )
    part = KafkaPartition(config, "127.0.0.1:1", 0, resume_offset=5)
    before = CONSUMER_ERRORS.total()
    deadline = time.monotonic() + 10
    while CONSUMER_ERRORS.total() == before and time.monotonic() < deadline:
        assert part.next_batch() == []
        time.sleep(0.05)
    assert CONSUMER_ERRORS.total() > before
    assert part.snapshot() == 5  # the resume offset is kept while nothing is read
    part.close()


def test_missing_topic_is_created_when_configured(kafka_bootstrap: str, settings: Settings) -> None:
    topic = unique("sf-raw-new")
    try:
        source = KafkaRawSource(KafkaSourceConfig(topic=topic, partitions=2), settings)
        assert source.list_parts() == [f"{topic}/0", f"{topic}/1"]
    finally:
        delete_topics(kafka_bootstrap, [topic])


def test_a_reread_gives_each_message_the_same_received_at(
    raw_topic: str, settings: Settings
) -> None:
    """received_at is the message's Kafka timestamp: a replay after a crash reproduces it."""

    def read() -> dict[str | None, Any]:
        flow = Dataflow("kafka_source_reread")
        out: list[RawMessage] = []
        op.output("out", op.input("kafka", flow, KafkaRawSource(config_for(raw_topic), settings)),
                  TestingSink(out))  # fmt: skip
        run_main(flow)
        return {m.origin: m.received_at for m in out}

    first = read()
    time.sleep(0.05)  # (a clock-based received_at would now differ)
    assert read() == first and len(first) == N
