"""REST API queries on a real TimescaleDB: devices, readings, rollups, events, alarms."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.routers import readings as readings_router
from tests.integration.api_harness import READINGS_PER_SERIES, T0, World

pytest_plugins = ["tests.integration.api_harness"]

pytestmark = [pytest.mark.timescale, pytest.mark.kafka]


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def test_devices_list_with_metrics_last_seen_and_active_alarms(api: TestClient, api_world: World):
    r = api.get("/devices", headers=api_world.headers())
    assert r.status_code == 200, r.text
    items = {d["device"]: d for d in r.json()["items"]}
    assert set(items) == {"press-1", "press-2"}  # plant-b's pump-9 is not listed
    assert items["press-1"]["metrics"] == ["pressure", "temperature"]
    assert items["press-1"]["last_seen"].startswith("2026-01-01T00:04:09")  # T0 + 249 s
    # Active: raised or acknowledged, as /alarms?state=active lists them (other modules of
    # the suite act on this world's alarms: shelved ones are not active).
    for device in ("press-1", "press-2"):
        active = api.get(
            "/alarms", params={"state": "active", "device": device, "limit": 100},
            headers=api_world.headers(),
        ).json()["items"]  # fmt: skip
        assert items[device]["active_alarms"] == len(active), device


def test_devices_pagination_and_one_device(api: TestClient, api_world: World):
    first = api.get("/devices", params={"limit": 1}, headers=api_world.headers()).json()
    assert [d["device"] for d in first["items"]] == ["press-1"]
    second = api.get(
        "/devices", params={"limit": 1, "cursor": first["next_cursor"]}, headers=api_world.headers()
    ).json()
    assert [d["device"] for d in second["items"]] == ["press-2"]
    assert second["next_cursor"] is None
    one = api.get("/devices/press-2", headers=api_world.headers())
    assert one.status_code == 200 and one.json()["metrics"] == ["pressure", "temperature"]
    assert api.get("/devices/pump-9", headers=api_world.headers()).status_code == 404


def test_readings_keyset_pagination_covers_range_once(api: TestClient, api_world: World):
    params = {"device": "press-1", "metric": "temperature", "start": iso(10), "end": iso(110)}
    seen: list[float] = []
    cursor = None
    pages = 0
    while True:
        q = {**params, "limit": 30, **({"cursor": cursor} if cursor else {})}
        body = api.get("/readings", params=q, headers=api_world.headers()).json()
        seen += [item["value"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [float(i) for i in range(10, 110)]  # plant-a values, in order, no gaps
    assert pages == 4


def test_readings_descending(api: TestClient, api_world: World):
    q = {"device": "press-1", "metric": "pressure", "order": "desc", "limit": 3}
    body = api.get("/readings", params=q, headers=api_world.headers()).json()
    assert [i["value"] for i in body["items"]] == [249.0, 248.0, 247.0]
    assert body["items"][0]["source"] == "http"


def test_rollups_tier_and_rebucketing(api: TestClient, api_world: World):
    q = {"device": "press-1", "metric": "temperature", "tier": "1m", "end": iso(600)}
    body = api.get("/rollups", params=q, headers=api_world.headers()).json()
    assert len(body["items"]) == 10 and body["items"][0]["count"] == 60
    q = {**q, "interval": "5m", "end": iso(3600)}
    buckets = api.get("/rollups", params=q, headers=api_world.headers()).json()["items"]
    assert len(buckets) == 12
    b = buckets[1]  # minutes 5..9
    assert b["tier"] == "5m" and b["count"] == 300
    assert (b["min"], b["max"], b["first"], b["last"]) == (5.0, 19.0, 5.0, 19.0)
    assert b["mean"] == pytest.approx((10 + 11 + 12 + 13 + 14) / 5)
    assert b["window_end"].startswith("2026-01-01T00:10:00")


def test_rollups_rebucket_pagination(api: TestClient, api_world: World):
    q = {"device": "press-1", "metric": "temperature", "interval": "1h", "limit": 1}
    first = api.get("/rollups", params=q, headers=api_world.headers()).json()
    assert first["items"][0]["count"] == 3600 and first["next_cursor"]
    second = api.get(
        "/rollups", params={**q, "cursor": first["next_cursor"]}, headers=api_world.headers()
    ).json()
    assert second["items"][0]["window_start"].startswith("2026-01-01T01:00")
    assert second["next_cursor"] is None


def test_events_filters_and_pagination(api: TestClient, api_world: World):
    q = {"device": "press-1", "start": iso(10), "end": iso(40), "limit": 4}
    first = api.get("/events", params=q, headers=api_world.headers()).json()
    assert [e["ts"][17:19] for e in first["items"]] == ["35", "30", "25", "20"]
    assert first["items"][0]["previous"] == "idle" and first["items"][0]["value"] == "running"
    rest = api.get(
        "/events", params={**q, "cursor": first["next_cursor"]}, headers=api_world.headers()
    ).json()
    assert [e["ts"][17:19] for e in rest["items"]] == ["15", "10"]


def test_alarm_filters(api: TestClient, api_world: World):
    h = api_world.headers()
    everything = api.get("/alarms", headers=h).json()["items"]
    assert len(everything) == 9
    assert {a["device"] for a in everything} == {"press-1", "press-2", "press-3"}
    critical = api.get("/alarms", params={"severity": "critical"}, headers=h).json()["items"]
    assert {a["id"] for a in critical} == {
        api_world.alarms["plant-a:a_critical"].id,
        api_world.alarms["plant-a:act_critical"].id,
    }
    both = api.get("/alarms", params=[("severity", "critical"), ("severity", "warning")], headers=h)
    assert len(both.json()["items"]) == len(everything)
    press2 = api.get("/alarms", params={"device": "press-2"}, headers=h).json()["items"]
    assert {a["rule"] for a in press2} == {"anomaly", "hot"}
    ranged = api.get("/alarms", params={"start": iso(120), "end": iso(240)}, headers=h).json()
    assert {a["rule"] for a in ranged["items"]} == {"hot_manual", "anomaly"}
    page = api.get("/alarms", params={"limit": 2}, headers=h).json()
    rest = api.get("/alarms", params={"limit": 50, "cursor": page["next_cursor"]}, headers=h).json()
    ids = [a["id"] for a in page["items"] + rest["items"]]
    assert sorted(ids) == sorted(a["id"] for a in everything) and len(set(ids)) == len(ids)


def test_one_alarm_with_history(api: TestClient, api_world: World):
    alarm = api_world.alarms["plant-a:a_hot"]
    r = api.get(f"/alarms/{alarm.id}", headers=api_world.headers())
    assert r.status_code == 200
    body = r.json()
    assert body["rule"] == "hot" and body["transitions"][0]["transition"] == "raised"
    assert [t["seq"] for t in body["transitions"]] == list(range(1, body["seq"] + 1))
    assert api.get("/alarms/nope", headers=api_world.headers()).status_code == 404


def test_readings_csv_streams_every_row(api: TestClient, api_world: World, monkeypatch):
    # Small chunks so that 250 rows arrive in several pieces, as a month would.
    monkeypatch.setattr(readings_router, "_CHUNK_ROWS", 100)
    q = {"device": "press-1", "metric": "temperature"}
    with api.stream("GET", "/readings.csv", params=q, headers=api_world.headers()) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        chunks = list(r.iter_raw())
    assert len(chunks) >= 3
    text = b"".join(chunks).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["device", "metric", "ts", "value", "quality", "source", "unit", "score"]
    assert len(rows) == 1 + READINGS_PER_SERIES
    assert [float(row[3]) for row in rows[1:]] == [float(i) for i in range(READINGS_PER_SERIES)]


def test_rollups_csv_rebucketed(api: TestClient, api_world: World):
    q = {"device": "press-1", "metric": "temperature", "interval": "1h"}
    r = api.get("/rollups.csv", params=q, headers=api_world.headers())
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(row["count"]) for row in rows] == [3600, 3600]
    assert rows[0]["tier"] == "1h"


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/readings", {"metric": "t"}, "device"),
        ("/readings", {"device": "d", "metric": "t", "start": "yesterday"}, "start"),
        ("/readings", {"device": "d", "metric": "t", "start": "2026-01-01T00:00:00"}, "start"),
        ("/readings", {"device": "d", "metric": "t", "limit": "0"}, "limit"),
        ("/readings", {"device": "d", "metric": "t", "cursor": "%%%"}, "cursor"),
        ("/readings", {"device": "d", "metric": "t", "order": "sideways"}, "order"),
        ("/readings", {"device": "d", "metric": "t", "start": iso(10), "end": iso(5)}, "end"),
        ("/rollups", {"device": "d", "metric": "t", "tier": "1 minute"}, "tier"),
        ("/rollups", {"device": "d", "metric": "t", "tier": "5m", "interval": "7m"}, "interval"),
        ("/alarms", {"state": "burning"}, "state"),
        ("/alarms", {"severity": "fatal"}, "severity"),
        ("/events", {"cursor": "eyJ0IjogMX0="}, "cursor"),
    ],
)
def test_bad_parameters_answer_422_naming_them(
    api: TestClient, api_world: World, path, params, name
):
    r = api.get(path, params=params, headers=api_world.headers())
    assert r.status_code == 422, r.text
    body = r.json()
    assert name in body["message"]
    assert any(name in [str(p) for p in e["loc"]] for e in body["detail"])


SQLISH = [
    "press-1' OR '1'='1",
    "'; DROP TABLE readings; --",
    "press-1\" OR tenant <> 'x",
    "%(device)s",
    "{device}",
]


@pytest.mark.parametrize("evil", SQLISH)
def test_sql_shaped_strings_are_just_names(api: TestClient, api_world: World, evil: str):
    h = api_world.headers()
    r = api.get("/readings", params={"device": evil, "metric": "temperature"}, headers=h)
    assert r.status_code == 200 and r.json()["items"] == []
    assert api.get("/alarms", params={"device": evil}, headers=h).json()["items"] == []
    assert api.get(f"/devices/{evil}", headers=h).status_code == 404
    # The table is still there with its rows.
    q = {"device": "press-1", "metric": "temperature", "limit": 1}
    assert api.get("/readings", params=q, headers=h).json()["items"]


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/readings", "/rollups", "/events", "/alarms", "/devices"]),
    params=st.dictionaries(
        st.sampled_from(
            ["device", "metric", "start", "end", "limit", "cursor", "order", "tier", "interval",
             "state", "severity"]
        ),
        st.one_of(_text, st.integers(-10, 10**6).map(str), st.just("2026-01-01T00:00:00Z")),
        max_size=6,
    ),
)  # fmt: skip
def test_no_query_parameters_make_a_server_error(api: TestClient, api_world: World, path, params):
    r = api.get(path, params=params, headers=api_world.headers())
    assert r.status_code in (200, 404, 422), (r.status_code, r.text)
