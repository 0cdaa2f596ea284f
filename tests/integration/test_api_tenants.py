"""Tenant isolation and authentication of the REST API, through the API and in the database."""

from __future__ import annotations

import time

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.auth import encode_jwt
from tests.integration.api_harness import World

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = [pytest.mark.timescale, pytest.mark.kafka]

SECRET = "test-secret"  # api_settings() of the harness


def bearer(claims: dict, secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {encode_jwt(claims, secret)}"}


def test_each_tenant_sees_only_its_own_device_of_the_same_name(api: TestClient, api_world: World):
    q = {"device": "press-1", "metric": "temperature", "limit": 5}
    a = api.get("/readings", params=q, headers=api_world.headers("plant-a")).json()["items"]
    b = api.get("/readings", params=q, headers=api_world.headers("plant-b")).json()["items"]
    assert [i["value"] for i in a] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [i["value"] for i in b] == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    devices_b = api.get("/devices", headers=api_world.headers("plant-b")).json()["items"]
    assert {d["device"] for d in devices_b} == {"press-1", "pump-9"}
    q = {"device": "pump-9", "metric": "temperature"}
    assert (
        api.get("/readings", params=q, headers=api_world.headers("plant-a")).json()["items"] == []
    )
    ids_b = {
        a["id"] for a in api.get("/alarms", headers=api_world.headers("plant-b")).json()["items"]
    }
    ids_a = {
        a["id"] for a in api.get("/alarms", headers=api_world.headers("plant-a")).json()["items"]
    }
    assert ids_a and ids_b and not ids_a & ids_b
    rollups = api.get(
        "/rollups", params={"device": "press-1", "metric": "temperature", "limit": 1},
        headers=api_world.headers("plant-b"),
    ).json()["items"]  # fmt: skip
    assert rollups[0]["min"] == 1000.0
    csv_b = api.get(
        "/readings.csv",
        params={"device": "press-1", "metric": "temperature"},
        headers=api_world.headers("plant-b"),
    )
    values = [float(line.split(",")[3]) for line in csv_b.text.splitlines()[1:]]
    assert len(values) == 250 and min(values) == 1000.0


def test_jwt_bearer_tokens(api: TestClient, api_world: World):
    good = bearer({"tenant": "plant-b", "role": "viewer", "sub": "bob", "exp": time.time() + 60})
    r = api.get("/devices", headers=good)
    assert r.status_code == 200 and {d["device"] for d in r.json()["items"]} == {
        "press-1",
        "pump-9",
    }
    assert api.post("/ingest", json={}, headers=good).status_code == 403  # viewer
    cases = {
        "wrong secret": bearer({"tenant": "plant-b", "role": "viewer"}, "other"),
        "expired": bearer({"tenant": "plant-b", "role": "viewer", "exp": time.time() - 1}),
        "bad role": bearer({"tenant": "plant-b", "role": "root"}),
        "no tenant": bearer({"role": "viewer"}),
        "alg none": {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJ0ZW5hbnQiOiJwbGFudC1iIn0."},
        "garbage": {"Authorization": "Bearer not-a-token"},
        "nothing": {},
        "unknown key": {"X-API-Key": "sfk_00000000_nope"},
    }
    for name, headers in cases.items():
        r = api.get("/devices", headers=headers)
        assert r.status_code == 401, (name, r.text)


def test_admins_manage_keys_of_their_tenant_only(api: TestClient, api_world: World):
    admin_a = api_world.headers("plant-a", "admin")
    assert (
        api.post(
            "/keys", json={"role": "viewer"}, headers=api_world.headers("plant-a", "operator")
        ).status_code
        == 403
    )
    created = api.post("/keys", json={"role": "viewer", "name": "grafana"}, headers=admin_a)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert api.get("/devices", headers={"X-API-Key": key}).status_code == 200
    listed_a = {k["id"] for k in api.get("/keys", headers=admin_a).json()}
    listed_b = {
        k["id"] for k in api.get("/keys", headers=api_world.headers("plant-b", "admin")).json()
    }
    assert created.json()["id"] in listed_a and created.json()["id"] not in listed_b
    # plant-b's admin cannot revoke plant-a's key; plant-a's can.
    kid = created.json()["id"]
    assert (
        api.delete(f"/keys/{kid}", headers=api_world.headers("plant-b", "admin")).status_code == 404
    )
    assert api.delete(f"/keys/{kid}", headers=admin_a).json()["revoked_at"]
    assert api.get("/devices", headers={"X-API-Key": key}).status_code == 401


def _as_api_role(conn: psycopg.Connection, tenant: str | None) -> None:
    conn.execute("SET ROLE streamforge_api")
    if tenant is not None:
        conn.execute("SELECT set_config('streamforge.tenant', %s, false)", (tenant,))


def test_database_role_confines_every_table_to_the_tenant(api_world: World):
    tables = ["readings", "rollups", "events", "alarms", "alarm_transitions", "api_keys"]
    with psycopg.connect(api_world.url, autocommit=True) as conn:
        _as_api_role(conn, "plant-a")
        for table in tables:
            tenants = {t for (t,) in conn.execute(f"SELECT DISTINCT tenant FROM {table}")}
            assert tenants == {"plant-a"}, table
            assert conn.execute(
                f"SELECT count(*) FROM {table} WHERE tenant = 'plant-b'"
            ).fetchone() == (0,)
        # Writes to another tenant's rows touch nothing, new rows for it are refused.
        cur = conn.execute("UPDATE alarms SET comment = 'pwned' WHERE tenant = 'plant-b'")
        assert cur.rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO api_keys (id, tenant, role, key_hash)"
                " VALUES ('x', 'plant-b', 'admin', 'x')"
            )
        # Only reads on the time-series tables.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM readings")
    with psycopg.connect(api_world.url, autocommit=True) as conn:
        _as_api_role(conn, None)  # no tenant set: nothing at all
        for table in tables:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_database_role_cannot_read_timescaledb_chunks(api_world: World, api_db):
    chunks = [c for (c,) in api_db.execute("SELECT show_chunks('readings')::text")]
    chunks += [c for (c,) in api_db.execute("SELECT show_chunks('rollups')::text")]
    assert chunks, "the fixture data should have created chunks"
    with psycopg.connect(api_world.url, autocommit=True) as conn:
        _as_api_role(conn, "plant-a")
        for chunk in chunks:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT tenant FROM {chunk} LIMIT 1")
        # A chunk created after the grants (a new day of readings) is closed too.
        conn.execute("RESET ROLE")
        conn.execute(
            "INSERT INTO readings (tenant, device, metric, ts, value, source)"
            " VALUES ('plant-b', 'late', 'm', '2030-01-01T00:00:00Z', 1, 'http')"
        )
        row = conn.execute(
            "SELECT show_chunks('readings', newer_than => '2029-12-31'::timestamptz)::text"
        ).fetchone()
        assert row is not None
        new_chunk = row[0]
        _as_api_role(conn, "plant-a")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT tenant FROM {new_chunk}")
        assert conn.execute("SELECT count(*) FROM readings WHERE device = 'late'").fetchone() == (
            0,
        )
