"""Alarm management through the REST API on real TimescaleDB and Kafka: shelve, unshelve, KPIs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from connectors.timescale.rows import SPEC_BY_TYPE
from connectors.timescale.writer import TimescaleWriter
from flows.alarm_lifecycle import AlarmLifecycle
from schemas.models import Alarm, adapter
from tests.integration.api_harness import World, api_settings, world_database
from tests.support.kafka_tools import consume_all

pytestmark = [pytest.mark.timescale, pytest.mark.kafka]

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _raise(device: str, rule: str, minute: float, kind: str = "threshold", **kw: object) -> Alarm:
    life = AlarmLifecycle("plant-a", device, "temperature", rule, kind)  # type: ignore[arg-type]
    (alarm,) = life.raise_(T0 + timedelta(minutes=minute), "warning", 90.0, 80.0, rule)
    for name, value in kw.items():
        setattr(alarm, name, value)
    return alarm


@pytest.fixture(scope="module")
def world(database_url: str, kafka_bootstrap: str) -> Iterator[World]:
    """A database of its own (with the harness's alarms of 2026-01-01): 12 raises in the
    first 10 minutes from T0 (one chattering), 3 more later, a flood alarm; all active."""
    with world_database(database_url, kafka_bootstrap, "streamforge_alarm_mgmt_") as w:
        alarms = [_raise(f"press-{i % 4}", "hot" if i % 3 else "cold", i * 0.5) for i in range(12)]
        alarms[0].chattering = True
        alarms += [_raise("press-9", "hot", 30 + i) for i in range(3)]
        alarms.append(_raise("plant", "flood", 5, kind="flood"))
        writer = TimescaleWriter(w.url)
        try:
            writer.write({SPEC_BY_TYPE[Alarm]: alarms})
        finally:
            writer.close()
        w.alarms = {f"{a.device}:{a.rule}:{a.raised_at.minute}": a for a in alarms}
        yield w


@pytest.fixture(scope="module")
def api(world: World, kafka_bootstrap: str) -> Iterator[TestClient]:
    settings = api_settings(world, kafka_bootstrap, api_max_shelve_minutes=120)
    with TestClient(create_app(settings)) as client:
        yield client


def test_shelve_and_unshelve_store_publish_and_list_apart(
    api: TestClient, world: World, kafka_bootstrap: str
) -> None:
    alarm = world.alarms["press-9:hot:30"]
    op = world.headers(role="operator")
    # A reason is required, and the shelve is bounded.
    assert (
        api.post(f"/alarms/{alarm.id}/shelve", json={"minutes": 30}, headers=op).status_code == 422
    )
    too_long = api.post(
        f"/alarms/{alarm.id}/shelve", json={"minutes": 121, "comment": "x"}, headers=op
    )
    assert too_long.status_code == 422 and "at most 120" in too_long.text
    viewer = world.headers(role="viewer")
    body = {"minutes": 60, "comment": "sensor replaced"}
    assert api.post(f"/alarms/{alarm.id}/shelve", json=body, headers=viewer).status_code == 403

    before = datetime.now(UTC)
    r = api.post(f"/alarms/{alarm.id}/shelve", json=body, headers=op)
    assert r.status_code == 200, r.text
    shelved = r.json()
    assert (shelved["state"], shelved["transition"], shelved["seq"]) == ("shelved", "shelved", 2)
    until = datetime.fromisoformat(shelved["shelved_until"])
    assert before + timedelta(minutes=59) < until < datetime.now(UTC) + timedelta(minutes=61)
    active = api.get("/alarms", params={"state": "active"}, headers=viewer).json()["items"]
    assert alarm.id not in {a["id"] for a in active}
    listed = api.get("/alarms", params={"state": "shelved"}, headers=viewer).json()["items"]
    assert [a["id"] for a in listed] == [alarm.id]
    # Shelving twice: 409.
    assert api.post(f"/alarms/{alarm.id}/shelve", json=body, headers=op).status_code == 409

    r = api.post(f"/alarms/{alarm.id}/unshelve", headers=op)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["transition"], r.json()["shelved_until"]) == (
        "raised",
        "unshelved",
        None,
    )
    assert api.post(f"/alarms/{alarm.id}/unshelve", headers=op).status_code == 409
    # Both transitions reached the alarms topic (alert consumers) with the shelve's end.
    published = [
        adapter(Alarm).validate_json(m.value())
        for m in consume_all(kafka_bootstrap, world.topics["alarms"])
    ]
    mine = [(a.transition, a.seq, a.shelved_until) for a in published if a.id == alarm.id]
    assert mine == [("shelved", 2, until), ("unshelved", 3, None)]


def test_a_flood_alarm_takes_no_operator_action(api: TestClient, world: World) -> None:
    flood = world.alarms["plant:flood:5"]
    op = world.headers(role="operator")
    for action, body in (("acknowledge", {}), ("shelve", {"minutes": 5, "comment": "x"})):
        r = api.post(f"/alarms/{flood.id}/{action}", json=body, headers=op)
        assert r.status_code == 409 and "flood" in r.json()["detail"]


def test_kpis_count_raises_peaks_floods_and_the_noisiest(api: TestClient, world: World) -> None:
    params = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=2)).isoformat()}
    r = api.get("/alarms/kpis", params=params, headers=world.headers())
    assert r.status_code == 200, r.text
    k = r.json()
    assert (k["raises"], k["floods"], k["chattering"], k["peak_per_10_minutes"]) == (15, 1, 1, 12)
    assert k["raises_per_hour"] == pytest.approx(7.5)
    assert k["raises_per_10_minutes_avg"] == pytest.approx(1.25)
    # Active, shelved and standing are now, over every alarm: this test's 16 (the flood's
    # too) and the harness's 9 of 2026-01-01, still active; standing: raised more than
    # 24 h before the range's end, so only those 9.
    assert k["standing"] == 9
    assert k["active"] + k["shelved"] == 25
    assert k["top_rules"][0] == {"name": "hot", "raises": 11}
    assert {"name": "cold", "raises": 4} in k["top_rules"]
    assert k["top_devices"][0]["raises"] == 3 and len(k["top_devices"]) == 5
    # A range ending a day later: every alarm still active is standing.
    later = {"start": T0.isoformat(), "end": (T0 + timedelta(days=2)).isoformat()}
    assert api.get("/alarms/kpis", params=later, headers=world.headers()).json()["standing"] == 25
    bad = {"start": params["end"], "end": params["start"]}
    assert api.get("/alarms/kpis", params=bad, headers=world.headers()).status_code == 422
