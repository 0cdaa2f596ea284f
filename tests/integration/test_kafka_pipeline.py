"""Kafka as the system of record: raw topic -> ingest flow -> output topics, with recovery."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.sink_config import TopicSpec
from flows.config import PipelineConfig
from flows.ingest import build_flow
from schemas.kinds import ALL_OUTPUT_KINDS
from schemas.settings import Settings
from tests.support.kafka_tools import (
    consume_all,
    delete_topics,
    headers_of,
    kcat_read,
    produce_raw,
    unique,
)

pytestmark = pytest.mark.kafka


def raw(first: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "tenant": "plant-a",
            "device": f"press-{i % 4}",
            "metric": "pressure",
            "ts": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
            "value": float(i),
        }
        for i in range(first, first + n)
    ]


def test_raw_topic_to_output_topics_resuming_from_recovery(
    kafka_bootstrap: str, settings: Settings, tmp_path: Path
) -> None:
    raw_topic = unique("sf-pipe-raw")
    prefix = unique("sf-pipe") + "."
    ensure_topics(admin_client(kafka_bootstrap), [TopicSpec(raw_topic, partitions=2)])
    config = PipelineConfig.model_validate(
        {
            "sources": [{"type": "kafka", "topic": raw_topic, "stop_at_end": True}],
            "alarms": [],
            "anomaly": {"enabled": False},
            "sinks": [{"type": "kafka", "topic_prefix": prefix, "kinds": ["telemetry"]}],
        }
    )
    assert config.sinks[0].type == "kafka"
    telemetry_topic = config.sinks[0].topic_for("telemetry")
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    try:
        produce_raw(raw(0, 100), raw_topic, settings)
        run_main(
            build_flow(config, settings), epoch_interval=timedelta(0), recovery_config=recovery
        )
        assert len(consume_all(kafka_bootstrap, telemetry_topic)) == 100

        # More raw data arrives; the resumed flow reads only that (offsets from recovery).
        produce_raw(raw(100, 50), raw_topic, settings)
        run_main(
            build_flow(config, settings), epoch_interval=timedelta(0), recovery_config=recovery
        )

        envelopes = kcat_read(kafka_bootstrap, telemetry_topic, expected=150)
        assert len(envelopes) == 150
        values = sorted(json.loads(e["payload"])["value"] for e in envelopes)
        assert values == [float(i) for i in range(150)]  # each reading once: no re-read
        assert {e["key"] for e in envelopes} == {f"plant-a/press-{i}" for i in range(4)}
        assert all(headers_of(e)["kind"] == "telemetry" for e in envelopes)
        assert all(json.loads(e["payload"])["source"] == "kafka" for e in envelopes)
    finally:
        sink = config.sinks[0]
        assert sink.type == "kafka"
        delete_topics(kafka_bootstrap, [raw_topic] + [sink.topic_for(k) for k in ALL_OUTPUT_KINDS])
