"""Alarm management end to end: a running ``flows.ingest`` on real Kafka and TimescaleDB.

- a machine's stop and start raise no anomaly alarm (its run state
  suppresses them), while the same values from a device without a run state
  do raise one;
- an alarm shelved through the API stays quiet, escalation and all, and
  comes back (``unshelved``) when the shelve ends with the condition still there;
- a flood of raises produces one flood alarm, holds the lower-priority raises
  back while it lasts, and releases those still active when it ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.integration.api_harness import World, api_settings, world_database
from tests.integration.e2e_tools import FlowProcess, unique, wait_until
from tests.support.kafka_tools import produce_raw

pytestmark = [pytest.mark.timescale, pytest.mark.kafka, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def world(database_url: str, kafka_bootstrap: str) -> Iterator[World]:
    with world_database(database_url, kafka_bootstrap, "streamforge_alarm_flow_") as w:
        yield w


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def transitions(url: str, device: str) -> list[tuple[str, str, str]]:
    return [
        (r[0], r[1], r[2])  # (rule, transition, state)
        for r in rows(
            url,
            "SELECT rule, transition, state FROM alarm_transitions WHERE device = %s"
            " ORDER BY ts, seq",
            device,
        )
    ]


def test_suppression_shelving_and_floods_on_a_running_flow(
    world: World, kafka_bootstrap: str, tmp_path: Path
) -> None:
    raw_topic, actions_topic = unique("sf-mgmt-raw"), unique("sf-mgmt-actions")
    config = {
        "tenant": "plant-a",
        "sources": [{"type": "kafka", "topic": raw_topic, "partitions": 1}],
        "alarms": [
            {
                "name": "oven_hot",
                "metric": "temperature",
                "device": "oven-*",
                "levels": {"warning": 80, "critical": 95},
                "clear_at": 75,
                "priority": "high",
            },
            {
                "name": "line_hot",
                "metric": "temperature",
                "device": "line-*",
                "levels": {"warning": 80},
                "priority": "medium",
            },
        ],
        "alarm_management": {
            "areas": {"ovens": "oven-*", "mills": "mill-*"},
            "flood": {"raises": 5, "end_at": 2, "window": "20s", "hold_below": "high"},
        },
        "rollups": {"enabled": False},
        "operator_actions": {"topic": actions_topic},
        "sinks": [
            {"type": "timescale", "database_url": world.url, "retry_max": "2s"},
            {"type": "kafka", "topic_prefix": unique("sf-mgmt-out") + "."},
        ],
    }
    settings = api_settings(
        world, kafka_bootstrap, alarm_actions_topic=actions_topic, api_supervise_flows=False
    )
    flow = FlowProcess(config, tmp_path, recovery=False)

    def send(*readings: tuple[str, str, datetime, Any]) -> None:
        produce_raw(
            [
                {"tenant": "plant-a", "device": d, "metric": m, "ts": ts.isoformat(), "value": v}
                for d, m, ts, v in readings
            ],
            raw_topic,
            bootstrap_servers=kafka_bootstrap,
        )

    flow.start()
    try:
        with TestClient(create_app(settings)) as api:
            # --- a machine stops and starts: mill-1 has a run state, mill-2 none ---
            t0 = datetime.now(UTC) - timedelta(minutes=10)
            batch: list[tuple[str, str, datetime, Any]] = []
            for s in range(460):
                ts = t0 + timedelta(seconds=s)
                running = not 300 <= s < 360
                if s in (0, 300, 360):
                    batch.append(("mill-1", "state.running", ts, running))
                if not running:
                    power = 0.0
                elif 360 <= s < 390:
                    power = 80.0 - (s - 360)  # the start-up transient
                else:
                    power = 50.0 + 0.5 * math.sin(s / 3)
                batch += [("mill-1", "power", ts, power), ("mill-2", "power", ts, power)]
            send(*batch)
            wait_until(
                lambda: (
                    rows(world.url, "SELECT count(*) FROM readings WHERE device = 'mill-2'")
                    == [(460,)]
                ),
                90,
                flow.log_tail(),
            )
            assert [t for t in transitions(world.url, "mill-1") if t[0] == "anomaly"] == []
            control = transitions(world.url, "mill-2")
            assert ("anomaly", "raised", "raised") in control  # the same stop, unexplained

            # --- shelving: quiet while shelved, back when it ends ---
            now = datetime.now(UTC)
            send(("oven-1", "temperature", now, 85.0))
            wait_until(lambda: len(transitions(world.url, "oven-1")) == 1, 60, flow.log_tail())
            (alarm_id,) = rows(world.url, "SELECT id FROM alarms WHERE device = 'oven-1'")[0]
            r = api.post(
                f"/alarms/{alarm_id}/shelve",
                json={"minutes": 0.15, "comment": "thermocouple being replaced"},
                headers=world.headers(role="operator"),
            )
            assert r.status_code == 200, r.text
            until = datetime.fromisoformat(r.json()["shelved_until"])
            time.sleep(3.0)  # the flow follows the action topic
            send(("oven-1", "temperature", datetime.now(UTC), 97.0))  # would escalate
            send(("oven-1", "temperature", datetime.now(UTC), 90.0))
            time.sleep(2.0)
            assert transitions(world.url, "oven-1") == [
                ("oven_hot", "raised", "raised"),
                ("oven_hot", "shelved", "shelved"),
            ]
            time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5)
            send(("oven-1", "temperature", datetime.now(UTC), 91.0))  # the shelve is over
            wait_until(lambda: len(transitions(world.url, "oven-1")) == 3, 60, flow.log_tail())
            assert transitions(world.url, "oven-1")[-1] == ("oven_hot", "unshelved", "raised")

            # --- a flood: 8 raises at once in area "plant" (5 allowed) ---
            now = datetime.now(UTC)
            send(*[(f"line-{i}", "temperature", now, 85.0) for i in range(8)])
            floods = "SELECT transition, message FROM alarm_transitions WHERE kind = 'flood'"
            wait_until(lambda: len(rows(world.url, floods)) == 1, 60, flow.log_tail())
            lines = "SELECT device FROM alarms WHERE rule = 'line_hot' ORDER BY device"
            # The first 5 raises to reach the flood step pass (which 5 depends on the
            # series buckets); the other 3 are held back while the flood lasts.
            assert len(rows(world.url, lines)) == 5
            wait_until(lambda: len(rows(world.url, floods)) == 2, 90, flow.log_tail())
            (raised, cleared) = sorted(rows(world.url, floods), key=lambda r: r[0] != "raised")
            assert raised[1].startswith(
                "alarm flood in plant: more than 5 alarms raised in the 20 s"
            )
            assert "3 still active (released now), 0 came and went" in cleared[1]
            wait_until(lambda: len(rows(world.url, lines)) == 8, 30, flow.log_tail())
            assert rows(world.url, "SELECT count(*) FROM alarms WHERE kind = 'flood'") == [(1,)]
    finally:
        flow.stop()
