"""The device registry followed by a running flow, on real Kafka and TimescaleDB.

Devices are registered and decommissioned in the registry tables (as the
API does: ``POST /devices``, ``POST /devices/{device}/decommission``); the
flow reads them (``registry.refresh: 1s``). A rule selecting by device type
watches the registered press only; an unregistered device's readings are
dead letters under a tenant policy of ``reject``; decommissioning a device
clears its alarm with the reason, its state is gone from the next recovery
snapshot, its later readings are dead letters, and a restart from the
recovery store does not bring it back.
"""

from __future__ import annotations

import pickle
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.api_harness import World, world_database
from tests.integration.e2e_tools import FlowProcess, unique, wait_until
from tests.support.kafka_tools import produce_raw

pytestmark = [pytest.mark.timescale, pytest.mark.kafka, pytest.mark.timeout(240)]

TENANT = "plant-a"


@pytest.fixture(scope="module")
def world(database_url: str, kafka_bootstrap: str) -> Iterator[World]:
    with world_database(database_url, kafka_bootstrap, "streamforge_registry_") as w:
        yield w


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def execute(url: str, sql: str, *params: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, params)


def snapshot_series(recovery: Path) -> set[str]:
    """The series keys in the latest recovery snapshot of the series step (every bucket)."""
    keys: set[str] = set()
    for part in recovery.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as db:
            latest = db.execute(
                "SELECT s.state_key, s.ser_change FROM snaps s JOIN ("
                "  SELECT step_id, state_key, max(snap_epoch) AS epoch FROM snaps"
                "   WHERE step_id LIKE '%series' GROUP BY step_id, state_key) m"
                " ON s.step_id = m.step_id AND s.state_key = m.state_key"
                " AND s.snap_epoch = m.epoch"
            ).fetchall()
        for _bucket, blob in latest:
            if blob is not None:
                keys |= set(pickle.loads(blob))
    return keys


def test_a_flow_follows_registrations_policies_and_decommissioning(
    world: World, kafka_bootstrap: str, tmp_path: Path
) -> None:
    raw_topic = unique("sf-registry-raw")
    press_hot = {"name": "press_hot", "metric": "temperature", "device_type": "press",
                 "levels": {"warning": 80}, "clear_at": 75}  # fmt: skip
    config: dict[str, Any] = {
        "tenant": TENANT,
        "sources": [{"type": "kafka", "topic": raw_topic, "partitions": 1}],
        "alarms": [press_hot],
        "anomaly": {"enabled": False},
        "rollups": {"enabled": False},
        "registry": {"refresh": "1s"},
        "sinks": [{"type": "timescale", "database_url": world.url, "retry_max": "2s"}],
    }
    url = world.url
    for device, kind in (("rg-press-1", "press"), ("rg-press-2", "press"), ("rg-pump-1", "pump")):
        execute(
            url,
            "INSERT INTO devices (tenant, device, type, registered_by, updated_by)"
            " VALUES (%s, %s, %s, 'test', 'test')",
            TENANT, device, kind,
        )  # fmt: skip
    execute(
        url,
        "INSERT INTO device_policies (tenant, unregistered, updated_by) VALUES (%s, 'reject', 't')",
        TENANT,
    )
    flow = FlowProcess(config, tmp_path)
    start = datetime.now(UTC) - timedelta(minutes=5)

    def send(device: str, second: int, value: float) -> None:
        ts = (start + timedelta(seconds=second)).isoformat()
        reading = {"tenant": TENANT, "device": device, "metric": "temperature",
                   "ts": ts, "value": value}  # fmt: skip
        produce_raw([reading], raw_topic, bootstrap_servers=kafka_bootstrap)

    def transitions() -> list[tuple[Any, ...]]:
        return rows(
            url,
            "SELECT device, rule, transition, message FROM alarm_transitions"
            " WHERE device LIKE 'rg-%' ORDER BY device, seq",
        )

    def dead_letters() -> list[tuple[Any, ...]]:
        return rows(
            url,
            "SELECT step, reason FROM dead_letters WHERE step = 'registry' ORDER BY received_at",
        )

    flow.start()
    try:
        send("rg-press-1", 0, 85.0)
        send("rg-press-2", 0, 60.0)
        send("rg-pump-1", 0, 85.0)  # a pump: the press rule does not watch it
        send("rg-stranger", 0, 85.0)  # not registered, and the tenant rejects those
        wait_until(lambda: len(transitions()) == 1 and len(dead_letters()) == 1, 60,
                   flow.log_tail())  # fmt: skip
        assert transitions() == [
            ("rg-press-1", "press_hot", "raised", "temperature 85.0 >= 80.0 (warning)")
        ]
        assert dead_letters() == [
            ("registry", "device 'rg-stranger' is not registered"
                         " (tenant 'plant-a' rejects unregistered devices)")
        ]  # fmt: skip
        stored = rows(url, "SELECT device FROM readings WHERE device LIKE 'rg-%' ORDER BY device")
        assert stored == [("rg-press-1",), ("rg-press-2",), ("rg-pump-1",)]
        recovery = flow.recovery
        assert recovery is not None
        wait_until(
            lambda: (
                {f"{TENANT}/rg-press-1/temperature", f"{TENANT}/rg-press-2/temperature"}
                <= snapshot_series(recovery)
            ),
            30,
            flow.log_tail(),
        )

        execute(
            url,
            "UPDATE devices SET status = 'decommissioned', decommissioned_at = now(),"
            " updated_by = 'test' WHERE tenant = %s AND device = 'rg-press-1'",
            TENANT,
        )
        decommissioned_at = time.monotonic()
        wait_until(lambda: len(transitions()) == 2, 30, flow.log_tail())
        assert transitions()[1] == (
            "rg-press-1", "press_hot", "cleared",
            "cleared: device 'rg-press-1' is decommissioned: the series' state ended",
        )  # fmt: skip
        # Gone from the next snapshot; the other devices stay.
        wait_until(
            lambda: f"{TENANT}/rg-press-1/temperature" not in snapshot_series(recovery), 30,
            flow.log_tail(),
        )  # fmt: skip
        gone_after = time.monotonic() - decommissioned_at
        series = snapshot_series(recovery)
        assert {f"{TENANT}/rg-press-2/temperature", f"{TENANT}/rg-pump-1/temperature"} <= series
        print(f"decommissioned device's state gone from the snapshot after {gone_after:.1f} s")

        send("rg-press-1", 1, 90.0)
        wait_until(lambda: len(dead_letters()) == 2, 30, flow.log_tail())
        assert dead_letters()[1] == ("registry", "device 'rg-press-1' is decommissioned")

        # A restart from the recovery store does not bring it back.
        flow.kill()
        flow.start()
        send("rg-press-2", 2, 82.0)
        wait_until(lambda: len(transitions()) == 3, 60, flow.log_tail())
        assert transitions()[2][:3] == ("rg-press-2", "press_hot", "raised")
        time.sleep(2.5)  # a snapshot or two
        assert f"{TENANT}/rg-press-1/temperature" not in snapshot_series(recovery)
    finally:
        flow.stop()
