"""Flow management through the REST API: definitions in the database, real supervised processes."""

from __future__ import annotations

import asyncio
import os
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

SIM_CONFIG = {
    "sources": [{"type": "simulator", "devices": 2, "metrics": 2, "rate": 5}],
    "sinks": [{"type": "stdout", "format": "json"}],
}


def wait_for(api: TestClient, headers: dict, name: str, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        flow = api.get(f"/flows/{name}", headers=headers).json()
        if predicate(flow):
            return flow
        assert time.monotonic() < deadline, flow
        time.sleep(0.2)


def row(conn: psycopg.Connection, query: str) -> tuple:
    found = conn.execute(query).fetchone()
    assert found is not None
    return found


def pid_alive(pid: int) -> bool:
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


def test_flow_lifecycle_with_a_real_bytewax_process(api: TestClient, api_world: World):
    admin = api_world.headers("plant-a", "admin")
    bad = api.post(
        "/flows", json={"name": "bad", "config": {"sources": [{"type": "nope"}]}}, headers=admin
    )
    assert bad.status_code == 422 and "sources" in bad.text
    r = api.post("/flows", json={"name": "sim", "config": SIM_CONFIG}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["config"]["tenant"] == "plant-a" and r.json()["status"] == "stopped"
    assert api.post("/flows", json={"name": "sim", "config": {}}, headers=admin).status_code == 409
    assert (
        api.post("/flows/sim/start", headers=api_world.headers("plant-a", "operator")).status_code
        == 403
    )
    assert api.post("/flows/sim/start", headers=admin).status_code == 202
    running = wait_for(api, admin, "sim", lambda f: f["status"] == "running" and f["pids"])
    pid = running["pids"][0]
    assert pid_alive(pid)
    assert running["uptime_s"] is not None
    # The process really runs the pipeline: its stdout sink writes simulated records.
    flows_dir = Path(api.app.state.streamforge.settings.api_flows_dir)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while not any('"device"' in p.read_text() for p in flows_dir.glob("*/sim/flow.log")):
        assert time.monotonic() < deadline, "the flow wrote no records"
        time.sleep(0.3)
    assert list(flows_dir.glob("*/sim/recovery/*"))  # its recovery store exists
    # Restart: a new process, one more restart.
    assert api.post("/flows/sim/restart", headers=admin).status_code == 202
    restarted = wait_for(api, admin, "sim", lambda f: f["pids"] and f["pids"][0] != pid)
    assert restarted["restarts"] == 1 and restarted["status"] == "running"
    assert not pid_alive(pid)
    # Another tenant neither sees nor controls it.
    other = api_world.headers("plant-b", "admin")
    assert api.get("/flows/sim", headers=other).status_code == 404
    assert api.post("/flows/sim/stop", headers=other).status_code == 404
    assert api.get("/flows", headers=other).json() == []
    # Stop.
    new_pid = restarted["pids"][0]
    assert api.post("/flows/sim/stop", headers=admin).status_code == 202
    stopped = wait_for(api, admin, "sim", lambda f: f["status"] == "stopped" and not f["pids"])
    assert stopped["uptime_s"] is None and not pid_alive(new_pid)
    assert api.delete("/flows/sim", headers=admin).status_code == 204
    assert api.get("/flows/sim", headers=admin).status_code == 404


def test_crashing_flow_is_reported_and_restarted(database_url: str, tmp_path):
    """A process that exits is marked crashed with its last output, and restarted with backoff."""
    # A database of its own: the app's supervisor must not run this flow too.
    url = create_database(database_url)
    conn = psycopg.connect(url, autocommit=True)
    migrate(conn)
    conn.execute(
        "INSERT INTO flows (tenant, name, config, desired)"
        " VALUES ('plant-b', 'crashy', '{}', 'running')"
    )
    script = "import sys; print('boom: cannot connect to nowhere'); sys.exit(3)"
    supervisor = FlowSupervisor(
        url, tmp_path, command=lambda recovery: [sys.executable, "-c", script], backoff_initial=0.2
    )
    query = "SELECT status, restarts, last_error FROM flows WHERE name = 'crashy'"

    async def run() -> list[str]:
        statuses = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await supervisor.reconcile_once()
            status, restarts, _ = row(conn, query)
            statuses.append(status)
            if restarts >= 2:
                break
            await asyncio.sleep(0.2)
        return statuses

    try:
        statuses = asyncio.run(run())
        _, restarts, last_error = row(conn, query)
        assert restarts >= 2 and "crashed" in statuses
        assert "exited with status 3" in last_error and "boom: cannot connect" in last_error
        # 0.2 s before the first restart, 0.4 s before the second: doubling.
        assert supervisor.procs[("plant-b", "crashy")].backoff == pytest.approx(0.2 * 2**restarts)
    finally:
        asyncio.run(supervisor.stop())
        conn.close()
        drop_database(database_url, url)


def test_flows_outlive_their_supervisor_and_the_next_one_re_attaches(database_url: str, tmp_path):
    """An API restart does not stop the data: the flow's process runs on and is adopted."""
    url = create_database(database_url)
    conn = psycopg.connect(url, autocommit=True)
    migrate(conn)
    conn.execute(
        "INSERT INTO flows (tenant, name, config, desired) VALUES ('t', 'lasting', '{}', 'running')"
    )

    def command(recovery: Path) -> list[str]:  # the store's path shows who the process is
        return [sys.executable, "-c", "import time; time.sleep(120)", str(recovery)]

    first = FlowSupervisor(url, tmp_path, command=command, keep_flows=True)
    second = FlowSupervisor(url, tmp_path, command=command, keep_flows=False)
    query = "SELECT status, pids, restarts FROM flows WHERE name = 'lasting'"
    try:
        asyncio.run(first.reconcile_once())
        status, pids, restarts = row(conn, query)
        assert status == "running" and len(pids) == 1 and restarts == 0
        asyncio.run(first.stop())  # the API stops
        assert pid_alive(pids[0]), "the flow runs on without its supervisor"
        asyncio.run(second.reconcile_once())  # the next API's supervisor
        assert row(conn, query) == ("running", pids, 0), "re-attached, not started again"
        assert second.procs[("t", "lasting")].pid_list() == pids
        # and it controls the adopted process like its own: a stop ends it
        conn.execute("UPDATE flows SET desired = 'stopped'")
        asyncio.run(second.reconcile_once())
        assert not pid_alive(pids[0])
        assert row(conn, query)[:2] == ("stopped", [])
        # an unrelated process with a recorded pid is never adopted
        conn.execute(
            "UPDATE flows SET desired = 'running', status = 'running', pids = ARRAY[%s]",
            (os.getpid(),),
        )
        third = FlowSupervisor(url, tmp_path, command=command)
        asyncio.run(third.reconcile_once())
        status, new_pids, _ = row(conn, query)
        assert status == "running" and new_pids != [os.getpid()] and pid_alive(new_pids[0])
        asyncio.run(third.stop())
        assert not pid_alive(new_pids[0])
    finally:
        asyncio.run(second.stop())
        conn.close()
        drop_database(database_url, url)
