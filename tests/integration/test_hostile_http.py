"""Hostile bodies on ``POST /ingest``: every one answered, none lost, and the flow reads the rest.

The payloads of :mod:`tests.integration.test_hostile_input` (huge, deeply
nested, wrong types, NaN, bad UTF-8, absurd timestamps, random JSON) are
posted one by one to a real app on real Kafka and TimescaleDB. Each must
get a clear answer, never a server error: 413 for a body over
``decode.max_payload_bytes``, otherwise 200 with exactly the accepted and
rejected counts the pipeline's decoder gives (each rejection with its
reason). The raw topic must then hold every accepted reading, the
dead-letter topic every rejection, and a flow reading the raw topic must
end normally with what the same messages give in memory.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from fastapi.testclient import TestClient

from api.main import create_app
from connectors.kafka.sink_config import KafkaSinkConfig
from flows.config import PipelineConfig
from flows.decode import decode_payload
from flows.ingest import build_flow
from schemas.config import DecodeConfig
from schemas.kinds import ALL_OUTPUT_KINDS as KINDS
from schemas.models import RawMessage
from schemas.settings import Settings
from tests.integration.api_harness import api_settings, world_database
from tests.integration.test_hostile_input import hostile_payloads
from tests.support.kafka_tools import consume_all, delete_topics, unique

pytestmark = [pytest.mark.kafka, pytest.mark.timescale]

TENANT = "plant-a"


def _expected_answer(payload: bytes, limit: int) -> tuple[int, int, int]:
    """(status, accepted, rejected) by the decoder's own rules and the caller's tenant."""
    if len(payload) > limit:
        return 413, 0, 0
    raw = RawMessage(payload, "http", datetime.now(UTC), "http", defaults={"tenant": TENANT})
    readings, dead = decode_payload(raw, DecodeConfig())
    mine = sum(1 for r in readings if r.tenant == TENANT)
    return 200, mine, len(dead) + len(readings) - mine


@pytest.mark.timeout(300)
def test_hostile_bodies_are_answered_and_nothing_accepted_is_lost(
    kafka_bootstrap: str, database_url: str, settings: Settings
) -> None:
    payloads = hostile_payloads()
    limit = DecodeConfig().max_payload_bytes
    with world_database(database_url, kafka_bootstrap) as world:
        app_settings = api_settings(world, kafka_bootstrap, api_supervise_flows=False)
        headers = {**world.headers(TENANT, "operator"), "Content-Type": "application/json"}
        answers: Counter[int] = Counter()
        accepted = rejected = 0
        with TestClient(create_app(app_settings)) as client:
            for payload in payloads:
                response = client.post("/ingest", content=payload, headers=headers)
                status, want_accepted, want_rejected = _expected_answer(payload, limit)
                assert response.status_code == status, (payload[:100], response.text[:300])
                answers[status] += 1
                if status != 200:
                    continue
                body = response.json()
                assert (body["accepted"], body["rejected"]) == (want_accepted, want_rejected)
                assert all(e["reason"] for e in body.get("errors") or [])
                accepted += want_accepted
                rejected += want_rejected
        assert answers[413] >= 2 and answers[200] >= 250
        assert accepted >= 8 and rejected >= 100

        # Kafka holds every accepted reading and every rejection.
        raw = consume_all(kafka_bootstrap, world.topics["raw"])
        stored = 0
        for message in raw:
            document = json.loads(message.value())
            stored += len(document) if isinstance(document, list) else 1
        assert stored == accepted
        assert len(consume_all(kafka_bootstrap, world.topics["dead_letters"])) == rejected

        # The flow reads the raw topic to its end, as it would the same messages in memory.
        prefix = unique("sf-fuzz-http") + "."
        config = PipelineConfig.model_validate(
            {
                "sources": [{"type": "kafka", "topic": world.topics["raw"], "stop_at_end": True}],
                "sinks": [
                    {"type": "timescale", "database_url": world.url},
                    {"type": "kafka", "topic_prefix": prefix},
                ],
            }
        )
        with psycopg.connect(world.url) as conn:
            before = conn.execute("SELECT count(*) FROM readings").fetchone()
        try:
            run_main(build_flow(config, settings))
            now = datetime.now(UTC)
            messages = [
                RawMessage(m.value(), "kafka", now, f"{m.topic()}/{m.partition()}/{m.offset()}")
                for m in raw
            ]
            oracle: list[tuple[str, Any]] = []
            run_main(build_flow(config, settings, sources=[TestingSource(messages)],
                                sinks=[TestingSink(oracle)]))  # fmt: skip
            kinds = Counter(kind for kind, _ in oracle)
            # the text and the bool after a number on fz-1/temp: accepted, then the series refuses
            assert kinds["telemetry"] >= 6 and kinds["dead_letter"] == 2
            sink = config.sinks[1]
            assert sink.type == "kafka"
            for kind in ("telemetry", "dead_letter", "event"):
                written = consume_all(kafka_bootstrap, sink.topic_for(kind))
                assert len(written) == kinds[kind], kind
            keys = {(r.tenant, r.device, r.metric, r.ts) for k, r in oracle if k == "telemetry"}
            with psycopg.connect(world.url) as conn:
                after = conn.execute("SELECT count(*) FROM readings").fetchone()
            assert before is not None and after is not None
            assert after[0] - before[0] == len(keys)
        finally:
            delete_topics(
                kafka_bootstrap, [KafkaSinkConfig(topic_prefix=prefix).topic_for(k) for k in KINDS]
            )
