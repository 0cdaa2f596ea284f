"""REST API writes on real TimescaleDB and Kafka: alarm actions and HTTP ingest."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest
from confluent_kafka import Message
from fastapi.testclient import TestClient

from flows.decode import decode_payload
from schemas.config import DecodeConfig
from schemas.models import SCHEMA_VERSION, Alarm, RawMessage, Reading, adapter
from tests.integration.api_harness import World
from tests.support.kafka_tools import consume_all

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = [pytest.mark.timescale, pytest.mark.kafka]


def _alarm_messages(bootstrap: str, world: World, alarm_id: str) -> list[tuple[Alarm, Message]]:
    found = []
    for msg in consume_all(bootstrap, world.topics["alarms"]):
        alarm = adapter(Alarm).validate_json(msg.value())
        if alarm.id == alarm_id:
            found.append((alarm, msg))
    return found


def test_acknowledge_stores_and_publishes_the_transition(
    api: TestClient, api_world: World, api_db: psycopg.Connection, kafka_bootstrap: str
):
    alarm = api_world.alarms["plant-a:act_hot"]
    r = api.post(
        f"/alarms/{alarm.id}/acknowledge",
        json={"by": "alice", "comment": "checking the pump"},
        headers=api_world.headers(role="operator"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["transition"], body["seq"]) == ("acknowledged", "acknowledged", 2)
    assert body["acknowledged_by"] == "alice" and body["comment"] == "checking the pump"
    row = api_db.execute("SELECT state, seq FROM alarms WHERE id = %s", (alarm.id,)).fetchone()
    assert row == ("acknowledged", 2)
    seqs = api_db.execute(
        "SELECT seq, transition FROM alarm_transitions WHERE alarm_id = %s ORDER BY seq",
        (alarm.id,),
    ).fetchall()
    assert seqs == [(1, "raised"), (2, "acknowledged")]
    published = _alarm_messages(kafka_bootstrap, api_world, alarm.id)
    assert len(published) == 1
    record, msg = published[0]
    assert record.transition == "acknowledged" and record.seq == 2 and record.tenant == "plant-a"
    assert msg.key() == b"plant-a/press-3"
    assert ("schema-version", str(SCHEMA_VERSION).encode()) in list(msg.headers() or [])
    # Twice is an invalid transition: 409, nothing stored or published.
    again = api.post(f"/alarms/{alarm.id}/acknowledge", headers=api_world.headers(role="operator"))
    assert again.status_code == 409
    assert api_db.execute("SELECT seq FROM alarms WHERE id = %s", (alarm.id,)).fetchone() == (2,)
    history = api.get(f"/alarms/{alarm.id}", headers=api_world.headers()).json()["transitions"]
    assert [t["transition"] for t in history] == ["raised", "acknowledged"]


def test_manual_clear_follows_the_rule(api: TestClient, api_world: World, kafka_bootstrap: str):
    op = api_world.headers(role="operator")
    # Rule "hot" does not allow manual clear.
    not_allowed = api_world.alarms["plant-a:act_critical"]
    r = api.post(f"/alarms/{not_allowed.id}/clear", json={"comment": "x"}, headers=op)
    assert r.status_code == 409 and "does not allow manual clear" in r.json()["detail"]
    # hot_manual is listed in api_manual_clear_rules; anomaly alarms may always be cleared.
    for name in ("plant-a:act_manual", "plant-a:act_anomaly"):
        alarm = api_world.alarms[name]
        r = api.post(f"/alarms/{alarm.id}/clear", json={"comment": "sensor fixed"}, headers=op)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["state"] == "cleared" and body["cleared_at"] and body["seq"] == 2
        assert body["message"].startswith("cleared manually by sfk_")
        assert api.post(f"/alarms/{alarm.id}/clear", headers=op).status_code == 409
        assert api.post(f"/alarms/{alarm.id}/acknowledge", headers=op).status_code == 409
        ((record, _),) = _alarm_messages(kafka_bootstrap, api_world, alarm.id)
        assert record.state == "cleared" and record.comment == "sensor fixed"


def test_manual_clear_allowed_by_a_flow_rule(api: TestClient, api_world: World):
    alarm = api_world.alarms["plant-a:act_flow_rule"]
    op = api_world.headers(role="operator")
    assert api.post(f"/alarms/{alarm.id}/clear", headers=op).status_code == 409
    config = {
        "sources": [{"type": "simulator"}],
        "alarms": [{"name": "flow_rule", "metric": "temperature", "levels": {"major": 85},
                    "manual_clear": True}],
    }  # fmt: skip
    admin = api_world.headers(role="admin")
    created = api.post("/flows", json={"name": "rules", "config": config}, headers=admin)
    assert created.status_code == 201, created.text
    try:
        r = api.post(f"/alarms/{alarm.id}/clear", headers=op)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "cleared"
    finally:
        api.delete("/flows/rules", headers=admin)


def test_viewers_cannot_act_and_other_tenants_cannot_see(api: TestClient, api_world: World):
    alarm = api_world.alarms["plant-a:act_critical"]
    r = api.post(f"/alarms/{alarm.id}/acknowledge", headers=api_world.headers(role="viewer"))
    assert r.status_code == 403
    other = api.post(
        f"/alarms/{alarm.id}/acknowledge", headers=api_world.headers("plant-b", "admin")
    )
    assert other.status_code == 404
    assert api.get(f"/alarms/{alarm.id}", headers=api_world.headers("plant-b")).status_code == 404


def _raw_readings(bootstrap: str, world: World) -> list[tuple[Reading, bytes]]:
    """Every reading on the raw topic with its message key (messages hold one or an array)."""
    found = []
    for m in consume_all(bootstrap, world.topics["raw"]):
        value = m.value()
        if value.startswith(b"["):
            found += [(r, m.key()) for r in adapter(list[Reading]).validate_json(value)]
        else:
            found.append((adapter(Reading).validate_json(value), m.key()))
    return found


def test_ingest_one_and_batch_with_reasons(api: TestClient, api_world: World, kafka_bootstrap):
    op = api_world.headers(role="operator")
    one = api.post(
        "/ingest",
        json={
            "device": "ing-1",
            "metric": "temperature",
            "value": 71.5,
            "ts": "2026-01-01T00:00:00Z",
        },
        headers=op,
    )
    assert one.status_code == 200, one.text
    assert one.json() == {"accepted": 1, "rejected": 0, "errors": []}
    batch = [
        {"device": "ing-2", "metric": "temperature", "value": 1},
        {"device": "ing-2", "metric": "temperature"},  # no value
        {"device": "ing-2", "metric": "pressure", "value": 2.5, "tenant": "plant-b"},
        {"device": "ing-2", "metric": "pressure", "value": 3.5, "colour": "red"},
        {"device": "ing-2", "metric": "state", "value": "running", "tenant": "plant-a"},
    ]
    r = api.post("/ingest", json=batch, headers=op)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert set(reasons) == {1, 2, 3}
    assert "value" in reasons[1] and "plant-b" in reasons[2] and "colour" in reasons[3]
    stored = _raw_readings(kafka_bootstrap, api_world)
    ours = {(r.device, r.metric): (r, key) for r, key in stored if r.device.startswith("ing-")}
    assert set(ours) == {("ing-1", "temperature"), ("ing-2", "temperature"), ("ing-2", "state")}
    reading, key = ours[("ing-1", "temperature")]
    assert reading.tenant == "plant-a" and reading.source == "http" and reading.value == 71.5
    assert key == b"plant-a/ing-1"
    assert ours[("ing-2", "state")][1] == b"plant-a/ing-2"


def test_ingested_messages_decode_as_the_kafka_source_will(
    api: TestClient, api_world: World, kafka_bootstrap: str
):
    batch = [{"device": "dec-1", "metric": "m", "value": i, "unit": "bar"} for i in range(3)]
    batch.append({"device": "dec-2", "metric": "m", "value": True})
    r = api.post("/ingest", json=batch, headers=api_world.headers(role="operator"))
    assert r.json()["accepted"] == 4
    messages = [
        m for m in consume_all(kafka_bootstrap, api_world.topics["raw"])
        if m.key() in (b"plant-a/dec-1", b"plant-a/dec-2")
    ]  # fmt: skip
    assert len(messages) == 2  # one message per device
    decoded = []
    for m in messages:
        raw = RawMessage(m.value(), "kafka", datetime.now(UTC), origin="test")
        readings, dead = decode_payload(raw, DecodeConfig())
        assert dead == []
        decoded += readings
    assert sorted((r.device, r.value) for r in decoded) == [
        ("dec-1", 0), ("dec-1", 1), ("dec-1", 2), ("dec-2", True)
    ]  # fmt: skip
    assert {r.tenant for r in decoded} == {"plant-a"}
    assert {r.unit for r in decoded if r.device == "dec-1"} == {"bar"}


def test_ingest_rejects_whole_bodies_with_a_reason(api: TestClient, api_world: World):
    op = api_world.headers(role="operator")
    for body, needle in ((b"{not json", "JSON"), (b"[]", "empty"), (b"42", "device")):
        r = api.post("/ingest", content=body, headers={**op, "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["accepted"] == 0 and result["rejected"] == 1
        assert result["errors"][0]["index"] is None
        assert needle.lower() in result["errors"][0]["reason"].lower(), result
    assert api.post("/ingest", json={"device": "d"}, headers=api_world.headers()).status_code == 403


def test_ingest_rejects_a_large_bad_body_without_failing(api: TestClient, api_world: World):
    # 1.5 MB of broken JSON: under the body limit, over Kafka's message limit as a dead letter.
    body = b"[" + b'{"device": "x", "metric": "m", "value": 1},' * 35_000 + b"oops"
    r = api.post(
        "/ingest", content=body,
        headers={**api_world.headers(role="operator"), "Content-Type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 200, r.text[:300]
    assert r.json()["accepted"] == 0 and r.json()["rejected"] == 1


def test_ingest_body_too_large_is_413(api: TestClient, api_world: World):
    limit = api.app.state.streamforge.extras["decode_config"].max_payload_bytes  # type: ignore[attr-defined]
    item = json.dumps({"device": "big", "metric": "m", "value": 1})
    body = ("[" + ",".join([item] * (limit // len(item) + 2)) + "]").encode()
    r = api.post(
        "/ingest",
        content=body,
        headers={**api_world.headers(role="operator"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
