"""A flow restarted from its recovery store with a changed config, on real Kafka and TimescaleDB.

The alarms raised before the restart are judged again under the new rules
at resume: a threshold moved below the value escalates the active alarm, a
removed rule's alarm clears with the reason, and an unchanged rule's alarm
stays as it was.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.integration.api_harness import World, world_database
from tests.integration.e2e_tools import FlowProcess, unique, wait_until
from tests.ports import free_port
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


def reconciled(port: int) -> dict[str, float]:
    """``streamforge_series_reconciled_total`` of a flow process, by change."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = {}
    for line in text.splitlines():
        match = re.match(r'streamforge_series_reconciled_total\{change="(\w+)"\} (\S+)', line)
        if match:
            found[match[1]] = float(match[2])
    return found


def test_a_resumed_flow_keeps_remaining_tiers_and_changes_kind_and_detector(
    world: World, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Tiers [1m, 5m] become [1m, 5m, 15m]: the 5m window spanning the restart counts every
    value, and the new 15m window too; a series a new rule makes an event continues as
    events; a changed detector type restarts the detector (counted in the metrics)."""
    raw_topic = unique("sf-reconfigure-tiers")
    config: dict[str, Any] = {
        "tenant": "plant-a",
        "sources": [{"type": "kafka", "topic": raw_topic, "partitions": 1}],
        "alarms": [],
        "anomaly": {"detector": {"type": "default"}},
        "rollups": {"windows": ["1m", "5m"], "watermark_delay": 0, "allowed_lateness": "1h"},
        "sinks": [{"type": "timescale", "database_url": world.url, "retry_max": "2s"}],
    }
    flow = FlowProcess(config, tmp_path)
    port = free_port()
    flow.env["STREAMFORGE_METRICS_PORT"] = str(port)
    base = datetime.fromtimestamp((time.time() - 3600) // 900 * 900, UTC)  # a 15m boundary

    def send(second: int, metric: str, value: float) -> None:
        ts = (base + timedelta(seconds=second)).isoformat()
        reading = {"tenant": "plant-a", "device": "rt-press-1", "metric": metric,
                   "ts": ts, "value": value}  # fmt: skip
        produce_raw([reading], raw_topic, bootstrap_servers=kafka_bootstrap)

    def count(sql: str) -> int:
        with psycopg.connect(world.url) as conn:
            row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    flow.start()
    try:
        for second in range(0, 100, 10):  # 10 values in [0, 100)
            send(second, "temperature", 20.0 + second / 10)
            send(second, "mode", 1.0)  # numbers: telemetry, by the value's type
        wait_until(
            lambda: count("SELECT count(*) FROM readings WHERE device = 'rt-press-1'") == 20,
            60,
            flow.log_tail(),
        )
        time.sleep(3.0)  # a snapshot covers them
        flow.kill()

        config["rollups"]["windows"] = ["1m", "5m", "15m"]
        config["classification"] = [{"metric": "mode", "kind": "event"}]
        config["anomaly"]["detector"]["type"] = "zscore"
        flow.config_path.write_text(yaml.safe_dump(config))
        flow.start()
        for second in range(100, 300, 10):  # 20 more values in [100, 300)
            send(second, "temperature", 20.0 + second / 10)
            send(second, "mode", 2.0 if second < 200 else 3.0)
        send(960, "temperature", 99.0)  # the watermark passes 15 minutes: every window is due
        wait_until(
            lambda: (
                count(
                    "SELECT count(*) FROM rollups WHERE device = 'rt-press-1'"
                    " AND metric = 'temperature' AND tier = '15m'"
                )
                == 1
            ),
            60,
            flow.log_tail(),
        )
        # temperature: a new detector and tier set; mode: an event series now (a fresh state).
        assert reconciled(port) == {"kind": 1, "detector": 1, "rollup_tiers": 1}

        def window(tier: str) -> tuple[int, float, float]:
            with psycopg.connect(world.url) as conn:
                row = conn.execute(
                    "SELECT count, min, max FROM rollups WHERE device = 'rt-press-1'"
                    " AND metric = 'temperature' AND tier = %s AND window_start = %s",
                    (tier, base),
                ).fetchone()
            assert row is not None, tier
            return int(row[0]), float(row[1]), float(row[2])

        assert window("5m") == (30, 20.0, 49.0)  # 10 before the restart and 20 after
        assert window("15m") == (30, 20.0, 49.0)  # the new tier counts what was held too
        # mode: telemetry before the restart, events after (one per change of value).
        assert count("SELECT count(*) FROM readings WHERE metric = 'mode'") == 10
        events = count(
            "SELECT count(*) FROM events WHERE device = 'rt-press-1' AND metric = 'mode'"
        )
        assert events >= 2  # 2.0 then 3.0 (the first value may count as a change too)
    finally:
        flow.stop()
