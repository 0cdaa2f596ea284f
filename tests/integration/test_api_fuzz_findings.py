"""Regressions of the 500s schemathesis found (test_api_schemathesis.py), one focused test each.

- text PostgreSQL cannot store (NUL, lone surrogates) in parameters, cursors,
  bodies and token claims reached psycopg and failed as a 500;
- ``tier=0d`` divided by zero when re-bucketing rollups;
- a CSV export of a series with a non-latin-1 name failed building its
  ``Content-Disposition`` header (HTTP headers are latin-1).
"""

from __future__ import annotations

import json
from urllib.parse import unquote

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.auth import encode_jwt
from api.main import create_app
from api.params import encode_cursor
from api.routers.readings import content_disposition
from tests.integration.api_harness import World, api_settings

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = [pytest.mark.timescale, pytest.mark.kafka]

NUL = "press\x001"


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/readings", {"device": "press-1", "metric": NUL}, "metric"),
        ("/rollups", {"device": NUL, "metric": "temperature"}, "device"),
        ("/readings.csv", {"device": NUL, "metric": "temperature"}, "device"),
        ("/rollups.csv", {"device": "press-1", "metric": NUL}, "metric"),
        ("/events", {"device": NUL}, "device"),
        ("/devices", {"cursor": encode_cursor({"d": NUL})}, "cursor"),
        ("/events", {"cursor": encode_cursor({"t": "2026-01-01T00:00:00+00:00", "d": NUL,
                                             "m": "x"})}, "cursor"),
        ("/readings", {"device": "press-1", "metric": "t",
                       "cursor": encode_cursor({"t": "2026-01-01T00:00:00+00:00", "x": "\ud800"})},
         "cursor"),
    ],
)  # fmt: skip
def test_nul_in_query_parameters_is_a_422_naming_them(
    api: TestClient, api_world: World, path: str, params: dict, name: str
):
    r = api.get(path, params=params, headers=api_world.headers())
    assert r.status_code == 422, r.text
    assert name in r.json()["message"]


def test_nul_in_path_parameters_is_a_422(api: TestClient, api_world: World):
    assert api.get("/devices/press%001", headers=api_world.headers()).status_code == 422
    admin = api_world.headers("plant-a", "admin")
    assert api.delete("/keys/sfk_%00", headers=admin).status_code == 422


def test_text_the_database_cannot_store_is_a_422_even_where_not_validated(
    api: TestClient, api_world: World
):
    # /alarms?device= has no pattern of its own; the app-wide handler of
    # psycopg's NUL error answers 422 instead of a 500.
    r = api.get("/alarms", params={"device": NUL}, headers=api_world.headers())
    assert r.status_code == 422, r.text
    assert "NUL" in r.json()["message"] or "device" in r.json()["message"]


def test_unstorable_data_error_handler_leaves_other_data_errors_alone(
    api_world: World, kafka_bootstrap: str
):
    app = create_app(api_settings(api_world, kafka_bootstrap))

    @app.get("/nul")
    async def nul() -> None:
        raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    @app.get("/jsonb-nul")
    async def jsonb_nul() -> None:
        raise psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence")

    @app.get("/overflow")
    async def overflow() -> None:
        raise psycopg.errors.NumericValueOutOfRange("integer out of range")

    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: no database needed
    assert client.get("/nul").status_code == 422
    assert client.get("/jsonb-nul").status_code == 422
    assert client.get("/overflow").status_code == 500  # a real server error stays one


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
def test_unstorable_text_in_bodies_is_a_422(api: TestClient, api_world: World, bad: str):
    admin = {**api_world.headers("plant-a", "admin"), "Content-Type": "application/json"}
    # json.dumps escapes both ("\u0000", "\ud800"): what a client really sends.
    key = api.post("/keys", content=json.dumps({"role": "viewer", "name": bad}), headers=admin)
    assert key.status_code == 422, key.text
    assert "name" in key.json()["message"]
    flow = {"name": "fuzz-nul", "config": {"sources": [{"type": "simulator", "site": bad}]}}
    r = api.post("/flows", content=json.dumps(flow), headers=admin)
    assert r.status_code == 422, r.text
    assert api.get("/flows/fuzz-nul", headers=admin).status_code == 404


@pytest.mark.parametrize(
    "claims",
    [
        {"tenant": "plant-a\x00", "role": "viewer"},
        {"tenant": "\ud800", "role": "viewer"},
        {"tenant": "plant-a", "role": "viewer", "sub": "eve\x00"},
    ],
)
def test_unstorable_token_claims_are_a_401(api: TestClient, claims: dict):
    token = encode_jwt(claims, "test-secret")
    r = api.get("/devices", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text


def test_zero_tier_is_a_422_not_a_division_by_zero(api: TestClient, api_world: World):
    q = {"device": "press-1", "metric": "temperature", "tier": "0d", "interval": "0d"}
    for path in ("/rollups", "/rollups.csv"):
        r = api.get(path, params=q, headers=api_world.headers())
        assert r.status_code == 422, r.text
        assert "tier" in r.json()["message"]
    # A zero tier without re-bucketing is only a tier nothing is stored in.
    q = {"device": "press-1", "metric": "temperature", "tier": "0m"}
    assert api.get("/rollups", params=q, headers=api_world.headers()).json()["items"] == []


def test_csv_export_of_a_non_latin1_series_names_its_file_exactly(
    api: TestClient, api_world: World
):
    q = {"device": "presse-Ā", "metric": 'temp"\r\nX-Evil: 1'}
    r = api.get("/readings.csv", params=q, headers=api_world.headers())
    assert r.status_code == 200, r.text
    assert r.text.splitlines()[0].startswith("device,metric,ts")
    disposition = r.headers["content-disposition"]
    assert "x-evil" not in r.headers
    fallback, exact = disposition.split("; filename*=UTF-8''")
    assert fallback == 'attachment; filename="readings-presse-_-temp___X-Evil__1.csv"'
    assert unquote(exact) == f"readings-{q['device']}-{q['metric']}.csv"
    assert content_disposition("rollups-press-1-temperature-1h.csv") == (
        'attachment; filename="rollups-press-1-temperature-1h.csv";'
        " filename*=UTF-8''rollups-press-1-temperature-1h.csv"
    )


def test_unstorable_text_in_alarm_actions_and_filters_is_a_422(api: TestClient, api_world: World):
    alarm_id = next(a.id for a in api_world.alarms.values() if a.tenant == "plant-a")
    operator = api_world.headers("plant-a", "operator")
    for body in ({"comment": "\ud800"}, {"by": "al\x00ice"}):
        payload = json.dumps(body).encode()  # (keeps the lone surrogate as \ud800)
        r = api.post(
            f"/alarms/{alarm_id}/acknowledge",
            content=payload,
            headers={**operator, "Content-Type": "application/json"},
        )
        assert r.status_code == 422, r.text
    assert api.get("/alarms", params={"device": NUL}, headers=operator).status_code == 422
    assert api.get("/alarms/a%00b", headers=operator).status_code == 422
