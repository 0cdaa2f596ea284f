"""Through the REST API, on a real supervised flow (Kafka in, TimescaleDB out).

A threshold changed with ``PATCH /flows/{name}`` takes effect on an alarm
the running flow had already raised (the flow restarts from its recovery
store and reconciles), and the API restarted while the flow runs loses no
data: the flow runs on without it and the new API re-attaches to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.integration.api_harness import World, api_settings, world_database
from tests.integration.e2e_tools import unique, wait_until
from tests.support.kafka_tools import produce_raw

pytestmark = [pytest.mark.timescale, pytest.mark.kafka, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def world(database_url: str, kafka_bootstrap: str) -> Iterator[World]:
    with world_database(database_url, kafka_bootstrap, "streamforge_api_reconf_") as w:
        yield w


def _transitions(url: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT seq, transition, severity FROM alarm_transitions"
            " WHERE device = 'ar-press-1' ORDER BY seq"
        ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _alive(pid: int) -> bool:
    # (a zombie counts as ended: in this test the flow is a child of the test process,
    # left unreaped when the first API's supervisor is gone; a real API process exits)
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text().lower()


def _readings(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings WHERE device = 'ar-line-1'").fetchone()
    return int(row[0]) if row else 0


def test_a_patched_threshold_reaches_a_raised_alarm_and_an_api_restart_stops_no_data(
    world: World, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMFORGE_METRICS_PORT", "off")
    raw = unique("sf-api-reconf-raw")
    hot = {"name": "hot", "metric": "temperature", "device": "ar-press-*",
           "levels": {"warning": 80, "critical": 95}, "clear_at": 75}  # fmt: skip
    config = {
        "sources": [{"type": "kafka", "topic": raw, "partitions": 1}],
        "alarms": [hot],
        "anomaly": {"enabled": False},
        "rollups": {"enabled": False},
        "sinks": [{"type": "timescale", "database_url": world.url, "retry_max": "2s"}],
    }
    settings = api_settings(
        world, kafka_bootstrap, api_flows_dir=str(tmp_path), api_flows_outlive_api=True
    )
    admin = world.headers("plant-a", "admin")
    start = datetime.now(UTC) - timedelta(minutes=5)

    def send(device: str, metric: str, values: list[float], first: int = 0) -> None:
        readings = [
            {"tenant": "plant-a", "device": device, "metric": metric,
             "ts": (start + timedelta(seconds=first + i)).isoformat(), "value": v}
            for i, v in enumerate(values)
        ]  # fmt: skip
        produce_raw(readings, raw, bootstrap_servers=kafka_bootstrap)

    def status(api: TestClient) -> dict:
        return api.get("/flows/reconf", headers=admin).json()

    pid = None
    try:
        with TestClient(create_app(settings)) as api:
            created = api.post(
                "/flows", json={"name": "reconf", "config": config, "start": True}, headers=admin
            )
            assert created.status_code == 201, created.text
            wait_until(lambda: status(api)["status"] == "running", 60, "the flow running")
            send("ar-press-1", "temperature", [85.0])
            wait_until(lambda: _transitions(world.url) == [(1, "raised", "warning")], 90, "raise")
            time.sleep(7)  # a snapshot (every 5 s) covers the raised alarm
            patched = api.patch(
                "/flows/reconf",
                json={"config": {"alarms": [{**hot, "levels": {"warning": 60, "critical": 84},
                                             "clear_at": 55}]},
                      "reason": "hotter process"},
                headers=admin,
            )  # fmt: skip
            assert patched.status_code == 200, patched.text
            assert patched.json()["config_version"] == 2
            wait_until(
                lambda: (2, "escalated", "critical") in _transitions(world.url),
                120,
                "the raised alarm escalated under the new levels",
            )
            pid = status(api)["pids"][0]
            send("ar-line-1", "speed", [float(i) for i in range(50)])
            wait_until(lambda: _readings(world.url) == 50, 60, "readings before the API restart")
        # The API is down; the flow is not.
        assert _alive(pid)
        send("ar-line-1", "speed", [float(i) for i in range(50, 120)], first=50)
        wait_until(lambda: _readings(world.url) == 120, 60, "readings while the API is down")
        with TestClient(create_app(settings)) as api:
            wait_until(lambda: status(api)["pids"] == [pid], 30, "re-attached to the same process")
            flow = status(api)
            assert flow["status"] == "running" and flow["restarts"] == 1  # the PATCH's restart
            send("ar-line-1", "speed", [float(i) for i in range(120, 150)], first=120)
            wait_until(lambda: _readings(world.url) == 150, 60, "readings after the restart")
            assert _transitions(world.url)[:2] == [
                (1, "raised", "warning"),
                (2, "escalated", "critical"),
            ]
            assert api.delete("/flows/reconf", headers=admin).status_code == 204
            wait_until(lambda: not _alive(pid), 30, "the flow stopped")
    finally:
        if pid is not None and _alive(pid):
            import os
            import signal

            os.kill(pid, signal.SIGKILL)
