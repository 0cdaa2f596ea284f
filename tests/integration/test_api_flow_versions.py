"""Flow config versions through the REST API: PUT, PATCH, history, rollback, shape changes.

And the supervisor's side: a flow's recovery store belongs to one flow and
one shape of it, so a flow re-created under the same name, or given a
config of another shape, starts from an empty store (the old one archived).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.flows import FlowSupervisor
from connectors.timescale.migrate import migrate
from tests.integration.api_harness import World, create_database, drop_database

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = [pytest.mark.timescale, pytest.mark.kafka]

CONFIG = {
    "sources": [{"type": "simulator", "devices": 2, "metrics": 2, "rate": 5}],
    "sinks": [{"type": "stdout", "format": "json"}],
}


def test_config_changes_are_versioned_with_author_reason_and_diff_and_roll_back(
    api: TestClient, api_world: World
) -> None:
    admin = api_world.headers("plant-a", "admin")
    created = api.post("/flows", json={"name": "versioned", "config": CONFIG}, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["config_version"] == 1
    first_config = created.json()["config"]

    put = api.put(
        "/flows/versioned",
        json={"config": {**CONFIG, "anomaly": {"threshold": 0.97}}, "reason": "fewer alarms"},
        headers=admin,
    )
    assert put.status_code == 200, put.text
    assert put.json()["config_version"] == 2
    assert put.json()["config"]["anomaly"]["threshold"] == 0.97
    assert put.json()["generation"] == created.json()["generation"]  # stopped: no restart

    patch = api.patch(
        "/flows/versioned",
        json={"config": {"anomaly": {"threshold": 0.93}, "series_ttl": 3600}},
        headers=admin,
    )
    assert patch.status_code == 200, patch.text
    assert patch.json()["config"]["anomaly"]["threshold"] == 0.93
    assert patch.json()["config"]["series_ttl"] == 3600
    assert patch.json()["config"]["sources"] == put.json()["config"]["sources"]  # kept
    # null takes the default again
    reset = api.patch("/flows/versioned", json={"config": {"series_ttl": None}}, headers=admin)
    assert reset.json()["config"]["series_ttl"] == 7 * 86400 and reset.json()["config_version"] == 4
    # the same config again: no new version
    same = api.put("/flows/versioned", json={"config": reset.json()["config"]}, headers=admin)
    assert same.status_code == 200 and same.json()["config_version"] == 4
    # validated like a new flow, with the same one-line errors
    bad = api.patch(
        "/flows/versioned", json={"config": {"anomaly": {"threshold": "high"}}}, headers=admin
    )
    assert bad.status_code == 422 and "anomaly.threshold" in bad.text

    versions = api.get("/flows/versioned/versions", headers=api_world.headers("plant-a")).json()
    assert [v["version"] for v in versions] == [4, 3, 2, 1]
    assert versions[2]["reason"] == "fewer alarms"
    assert versions[2]["author"] and versions[2]["author"] == versions[3]["author"]
    assert versions[2]["diff"] == [{"path": "anomaly.threshold", "old": 0.9, "new": 0.97}]
    assert {c["path"] for c in versions[1]["diff"]} == {"anomaly.threshold", "series_ttl"}

    back = api.post("/flows/versioned/rollback", json={"version": 1}, headers=admin)
    assert back.status_code == 200, back.text
    assert back.json()["config_version"] == 5 and back.json()["config"] == first_config
    latest = api.get("/flows/versioned/versions/5", headers=admin).json()
    assert latest["reason"] == "rollback to version 1" and latest["config"] == first_config

    # Only admins change configs; other tenants see nothing.
    operator = api_world.headers("plant-a", "operator")
    assert api.put("/flows/versioned", json={"config": CONFIG}, headers=operator).status_code == 403
    other = api_world.headers("plant-b", "admin")
    assert api.get("/flows/versioned/versions", headers=other).status_code == 404
    assert api.put("/flows/versioned", json={"config": CONFIG}, headers=other).status_code == 404
    assert api.delete("/flows/versioned", headers=admin).status_code == 204


def test_a_change_of_the_flows_shape_needs_fresh_state(api: TestClient, api_world: World) -> None:
    admin = api_world.headers("plant-a", "admin")
    assert api.post("/flows", json={"name": "reshaped", "config": CONFIG}, headers=admin).is_success
    other_sinks = {**CONFIG, "sinks": [{"type": "null"}]}
    refused = api.put("/flows/reshaped", json={"config": other_sinks}, headers=admin)
    assert refused.status_code == 409 and "sinks" in refused.text and "fresh_state" in refused.text
    assert api.get("/flows/reshaped", headers=admin).json()["config_version"] == 1
    accepted = api.put(
        "/flows/reshaped", json={"config": other_sinks, "fresh_state": True}, headers=admin
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state_epoch"] == 1 and accepted.json()["config_version"] == 2
    assert api.delete("/flows/reshaped", headers=admin).status_code == 204
    # Created again under the same name: the versions go on (the audit trail stays).
    again = api.post("/flows", json={"name": "reshaped", "config": CONFIG}, headers=admin)
    assert again.json()["config_version"] == 3
    assert api.delete("/flows/reshaped", headers=admin).status_code == 204


def test_the_supervisor_never_resumes_a_store_made_for_another_flow_or_shape(
    database_url: str, tmp_path: Path
) -> None:
    url = create_database(database_url)
    conn = psycopg.connect(url, autocommit=True)
    migrate(conn)
    insert = "INSERT INTO flows (tenant, name, config, desired) VALUES ('t', 'f', '{}', 'running')"
    conn.execute(insert)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    supervisor = FlowSupervisor(url, tmp_path, command=lambda recovery: sleeper)

    def reconcile() -> None:
        asyncio.run(supervisor.reconcile_once())

    def home() -> Path:
        found = [p for p in tmp_path.glob("*/f") if p.is_dir()]
        assert len(found) == 1, found
        return found[0]

    try:
        reconcile()
        store = home() / "recovery"
        (store / "marker.txt").write_text("state of the first flow")
        # A change of the same shape (a restart): the store is kept.
        conn.execute("UPDATE flows SET generation = generation + 1")
        reconcile()
        assert (store / "marker.txt").read_text() == "state of the first flow"
        # Another shape (fresh_state): archived, a new empty store.
        conn.execute("UPDATE flows SET generation = generation + 1, state_epoch = 1")
        reconcile()
        assert not (store / "marker.txt").exists()
        archived = list(home().glob("recovery.archived-*"))
        assert len(archived) == 1
        assert (archived[0] / "marker.txt").read_text() == "state of the first flow"
        # Deleted: its directory is archived; created again: a new store.
        (store / "marker.txt").write_text("state of the second shape")
        conn.execute("DELETE FROM flows")
        reconcile()
        assert len(list(tmp_path.glob("*/f.deleted-*"))) == 1
        time.sleep(0.01)
        conn.execute(insert)
        reconcile()
        assert not (home() / "recovery" / "marker.txt").exists()
    finally:
        asyncio.run(supervisor.stop())
        conn.close()
        drop_database(database_url, url)
