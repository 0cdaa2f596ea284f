"""A flow restarted from its recovery store with a changed config, on real Kafka and TimescaleDB.

The alarms raised before the restart are judged again under the new rules
at resume: a threshold moved below the value escalates the active alarm, a
removed rule's alarm clears with the reason, and an unchanged rule's alarm
stays as it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.integration.api_harness import World, world_database
from tests.integration.e2e_tools import FlowProcess, unique, wait_until
from tests.support.kafka_tools import produce_raw

pytestmark = [pytest.mark.timescale, pytest.mark.kafka, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def world(database_url: str, kafka_bootstrap: str) -> Iterator[World]:
    with world_database(database_url, kafka_bootstrap, "streamforge_reconfigure_") as w:
        yield w


def transitions(url: str) -> list[tuple[str, str, int, str, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT device, rule, seq, transition, severity, message FROM alarm_transitions"
            " WHERE device LIKE 'rc-%%' ORDER BY device, rule, seq"
        ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_resumed_flow_applies_changed_and_removed_rules_to_its_alarms(
    world: World, kafka_bootstrap: str, tmp_path: Path
) -> None:
    raw_topic = unique("sf-reconfigure-raw")
    hot = {"name": "hot", "metric": "temperature", "device": "rc-press-*",
           "levels": {"warning": 80, "critical": 95}, "clear_at": 75}  # fmt: skip
    cold = {"name": "cold", "metric": "temperature", "device": "rc-tank-*",
            "direction": "below", "levels": {"warning": 10}}  # fmt: skip
    steady = {"name": "steady", "metric": "pressure", "levels": {"warning": 5}}
    config: dict[str, Any] = {
        "tenant": "plant-a",
        "sources": [{"type": "kafka", "topic": raw_topic, "partitions": 1}],
        "alarms": [hot, cold, steady],
        "anomaly": {"enabled": False},
        "rollups": {"enabled": False},
        "sinks": [{"type": "timescale", "database_url": world.url, "retry_max": "2s"}],
    }
    flow = FlowProcess(config, tmp_path)
    ts = datetime.now(UTC) - timedelta(minutes=1)

    def send(device: str, metric: str, value: float) -> None:
        reading = {"tenant": "plant-a", "device": device, "metric": metric,
                   "ts": ts.isoformat(), "value": value}  # fmt: skip
        produce_raw([reading], raw_topic, bootstrap_servers=kafka_bootstrap)

    flow.start()
    try:
        send("rc-press-1", "temperature", 85.0)
        send("rc-tank-1", "temperature", 5.0)
        send("rc-pump-1", "pressure", 6.0)
        wait_until(lambda: len(transitions(world.url)) == 3, 60, flow.log_tail())
        time.sleep(3.0)  # a snapshot (every second) covers them
        flow.kill()

        hotter_rules = {**hot, "levels": {"warning": 60, "critical": 84}, "clear_at": 55}
        config["alarms"] = [hotter_rules, steady]  # hot moved down, cold removed
        flow.config_path.write_text(yaml.safe_dump(config))
        flow.start()
        wait_until(lambda: len(transitions(world.url)) == 5, 60, flow.log_tail())
        time.sleep(1.0)  # nothing more may come
        assert transitions(world.url) == [
            ("rc-press-1", "hot", 1, "raised", "warning", "temperature 85.0 >= 80.0 (warning)"),
            ("rc-press-1", "hot", 2, "escalated", "critical",
             "temperature 85.0 >= 84.0 (critical)"),
            ("rc-pump-1", "steady", 1, "raised", "warning", "pressure 6.0 >= 5.0 (warning)"),
            ("rc-tank-1", "cold", 1, "raised", "warning", "temperature 5.0 <= 10.0 (warning)"),
            ("rc-tank-1", "cold", 2, "cleared", "warning",
             "cleared: rule 'cold' is no longer configured"),
        ]  # fmt: skip
    finally:
        flow.stop()
