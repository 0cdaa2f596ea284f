"""An operator's acknowledgement through the API, followed by a running flow.

Real Kafka, TimescaleDB, API app and ``bytewax.run flows.ingest`` process:
the flow raises an alarm, an operator acknowledges it through the API
(seq 2), and the flow's own next transitions must be numbered after it and
keep the acknowledgement, so that no transition is lost to the database's
``ON CONFLICT (alarm_id, seq)`` (before the flow followed operators'
actions, its de-escalation took seq 2 as well and was dropped).
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
from tests.integration.api_harness import World, api_settings
from tests.integration.e2e_tools import FlowProcess, unique, wait_until
from tests.support.kafka_tools import produce_raw

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = [pytest.mark.timescale, pytest.mark.kafka]


@pytest.fixture
def actions_topic() -> str:
    return unique("sf-actions")


@pytest.fixture
def client(api_world: World, kafka_bootstrap: str, actions_topic: str) -> Iterator[TestClient]:
    settings = api_settings(
        api_world, kafka_bootstrap, alarm_actions_topic=actions_topic, api_supervise_flows=False
    )
    with TestClient(create_app(settings)) as client:
        yield client


def transitions(url: str, device: str) -> list[tuple[int, str, str, str, str | None]]:
    with psycopg.connect(url) as conn:
        return [
            tuple(row)  # type: ignore[misc]
            for row in conn.execute(
                "SELECT seq, transition, state, severity, acknowledged_by FROM alarm_transitions"
                " WHERE device = %s ORDER BY seq",
                (device,),
            )
        ]


def test_flow_numbers_its_transitions_after_an_operators_acknowledgement(
    client: TestClient,
    api_world: World,
    kafka_bootstrap: str,
    actions_topic: str,
    tmp_path: Path,
) -> None:
    raw_topic, device = unique("sf-actions-raw"), unique("press")
    config = {
        "tenant": "plant-a",
        "sources": [{"type": "kafka", "topic": raw_topic, "partitions": 1}],
        "alarms": [
            {"name": "hot", "metric": "temperature", "levels": {"warning": 80, "critical": 95}}
        ],
        "anomaly": {"enabled": False},
        "rollups": {"enabled": False},
        "operator_actions": {"topic": actions_topic},
        "sinks": [
            {"type": "timescale", "database_url": api_world.url, "retry_max": "2s"},
            {"type": "kafka", "topic_prefix": unique("sf-actions-out") + "."},
        ],
    }
    flow = FlowProcess(config, tmp_path, recovery=False)
    t0 = datetime.now(UTC) - timedelta(minutes=5)

    def send(second: int, value: float) -> None:
        reading = {
            "tenant": "plant-a",
            "device": device,
            "metric": "temperature",
            "ts": (t0 + timedelta(seconds=second)).isoformat(),
            "value": value,
        }
        produce_raw([reading], raw_topic, bootstrap_servers=kafka_bootstrap)

    flow.start()
    try:
        send(0, 96.0)  # raised, critical
        wait_until(lambda: len(transitions(api_world.url, device)) == 1, 60, flow.log_tail())
        with psycopg.connect(api_world.url) as conn:
            found = conn.execute("SELECT id FROM alarms WHERE device = %s", (device,)).fetchone()
        assert found is not None
        operator = api_world.headers("plant-a", "operator")
        r = client.post(f"/alarms/{found[0]}/acknowledge", json={"by": "alice"}, headers=operator)
        assert r.status_code == 200, r.text
        assert r.json()["seq"] == 2
        # The flow reads the action within its poll interval (50 ms) once the
        # partition is assigned; give it ample time before the next reading.
        time.sleep(3.0)
        send(1, 85.0)  # de-escalated to warning: stays acknowledged
        send(2, 70.0)  # cleared
        wait_until(lambda: len(transitions(api_world.url, device)) >= 4, 60, flow.log_tail())
        time.sleep(1.0)  # nothing more may arrive
        assert transitions(api_world.url, device) == [
            (1, "raised", "raised", "critical", None),
            (2, "acknowledged", "acknowledged", "critical", "alice"),
            (3, "deescalated", "acknowledged", "warning", "alice"),
            (4, "cleared", "cleared", "warning", "alice"),
        ]
        with psycopg.connect(api_world.url) as conn:
            current = conn.execute(
                "SELECT seq, state FROM alarms WHERE device = %s", (device,)
            ).fetchone()
        assert current == (4, "cleared")
    finally:
        flow.stop()
