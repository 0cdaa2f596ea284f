"""Fixtures of the API tests: a fresh database per session, fixture rows, keys, an app.

Test modules load it as a plugin::

    pytest_plugins = ["tests.integration.api_harness"]

Two tenants, ``plant-a`` and ``plant-b``, both with a device called
``press-1`` (same name, different data: a leak would show), a key per role
for each, and Kafka topics unique to the session (deleted at the end).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from api.keys import create_key
from api.main import create_app
from api.settings import ApiSettings
from connectors.timescale.migrate import migrate
from connectors.timescale.rows import SPEC_BY_TYPE
from connectors.timescale.writer import TimescaleWriter
from flows.alarm_lifecycle import AlarmLifecycle
from schemas.models import Alarm, Event, Reading, Rollup

if TYPE_CHECKING:  # imported lazily: benchmarks use this module without a TestClient
    from fastapi.testclient import TestClient

T0 = datetime(2026, 1, 1, tzinfo=UTC)
"""Start of the fixture data: readings every second from T0, rollups every minute."""
READINGS_PER_SERIES = 250


def _db_url(base: str, name: str) -> str:
    return urlunparse(urlparse(base)._replace(path="/" + name))


def create_database(base_url: str, prefix: str = "streamforge_api_test_") -> str:
    """A fresh database from template1 (TimescaleDB installed); its URL."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        for attempt in range(40):
            try:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
                break
            except psycopg.errors.ObjectInUse:
                # TimescaleDB's scheduler touches template1 now and then.
                time.sleep(0.1 + random.random() * 0.2)
                if attempt == 39:
                    raise
    return _db_url(base_url, name)


def drop_database(base_url: str, url: str) -> None:
    """Drop a test database (its connections are closed by then)."""
    name = urlparse(url).path.lstrip("/")
    with psycopg.connect(base_url, autocommit=True) as conn:
        for attempt in range(50):
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except (psycopg.errors.ObjectInUse, psycopg.errors.InsufficientPrivilege):
                # TimescaleDB's per-database scheduler (a superuser's
                # process, which we may not terminate) is still attached.
                if attempt == 49:
                    raise
                time.sleep(0.2)


@dataclass
class World:
    """What the fixture data holds, for assertions."""

    url: str
    flows_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="sf-api-flows-"))
    keys: dict[tuple[str, str], str] = field(default_factory=dict)
    alarms: dict[str, Alarm] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)

    def headers(self, tenant: str = "plant-a", role: str = "viewer") -> dict[str, str]:
        """The X-API-Key header of a tenant's key with this role."""
        return {"X-API-Key": self.keys[(tenant, role)]}


def _alarm(tenant: str, device: str, rule: str, kind: str, minute: int) -> list[Alarm]:
    life = AlarmLifecycle(tenant, device, "temperature", rule, kind)  # type: ignore[arg-type]
    raised_at = T0 + timedelta(minutes=minute)
    return life.raise_(raised_at, "warning", 82.0, 80.0, f"{rule} on {device}")


def _fixture_records(tenant: str, offset: float) -> dict[type, list[object]]:
    readings: list[object] = []
    for device in ("press-1", "pump-9") if tenant == "plant-b" else ("press-1", "press-2"):
        for metric in ("temperature", "pressure"):
            for i in range(READINGS_PER_SERIES):
                readings.append(
                    Reading(
                        device, metric, T0 + timedelta(seconds=i), offset + i, tenant, source="http"
                    )
                )
    rollups: list[object] = []
    for minute in range(120):
        start = T0 + timedelta(minutes=minute)
        rollups.append(
            Rollup(tenant, "press-1", "temperature", "1m", start, start + timedelta(minutes=1),
                   60, offset + minute, offset + minute + 10, (offset + minute + 5) * 60,
                   offset + minute + 5, 1.0, offset + minute, offset + minute + 10,
                   start, start + timedelta(seconds=59))
        )  # fmt: skip
    events: list[object] = [
        Event(tenant, "press-1", "state.mode", T0 + timedelta(seconds=s), "idle", "running")
        for s in range(0, 50, 5)
    ]
    return {Reading: readings, Rollup: rollups, Event: events}


@contextlib.contextmanager
def world_database(
    database_url: str, kafka_bootstrap: str, prefix: str = "streamforge_api_test_"
) -> Iterator[World]:
    """A fresh migrated database with both tenants' data and keys, and unique topics.

    Everything (database, flow directory, topics) is removed on exit.
    """
    url = create_database(database_url, prefix=prefix)
    world = World(url=url)
    suffix = uuid.uuid4().hex[:8]
    world.topics = {
        "raw": f"sf-api-test-{suffix}.raw",
        "alarms": f"sf-api-test-{suffix}.alarms",
        "dead_letters": f"sf-api-test-{suffix}.dead_letters",
    }
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            for tenant in ("plant-a", "plant-b"):
                for role in ("viewer", "operator", "admin"):
                    world.keys[(tenant, role)] = create_key(conn, tenant, role, f"test {role}")
        writer = TimescaleWriter(url)
        try:
            for tenant, offset in (("plant-a", 0.0), ("plant-b", 1000.0)):
                records = _fixture_records(tenant, offset)
                alarms: list[Alarm] = []
                for name, device, rule, kind, minute in (
                    ("a_hot", "press-1", "hot", "threshold", 1),
                    ("a_manual", "press-1", "hot_manual", "threshold", 2),
                    ("a_anomaly", "press-2", "anomaly", "anomaly", 3),
                    ("a_critical", "press-2", "hot", "threshold", 4),
                    # Alarms the action tests change (the query tests use a_*).
                    ("act_hot", "press-3", "hot", "threshold", 10),
                    ("act_manual", "press-3", "hot_manual", "threshold", 11),
                    ("act_anomaly", "press-3", "anomaly", "anomaly", 12),
                    ("act_critical", "press-3", "hot", "threshold", 13),
                    ("act_flow_rule", "press-3", "flow_rule", "threshold", 14),
                ):
                    (alarm,) = _alarm(tenant, device, rule, kind, minute)
                    if name.endswith("_critical"):
                        alarm.severity = "critical"
                    world.alarms[f"{tenant}:{name}"] = alarm
                    alarms.append(alarm)
                records[Alarm] = alarms  # type: ignore[assignment]
                writer.write({SPEC_BY_TYPE[t]: rs for t, rs in records.items()})
        finally:
            writer.close()
        yield world
    finally:
        drop_database(database_url, url)
        shutil.rmtree(world.flows_dir, ignore_errors=True)
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for future in admin.delete_topics(list(world.topics.values())).values():
            with contextlib.suppress(Exception):  # never created, or already gone
                future.result(10)


@pytest.fixture(scope="session")
def api_world(database_url: str, kafka_bootstrap: str) -> Iterator[World]:
    """A migrated database with both tenants' data and keys, and session-unique topics."""
    with world_database(database_url, kafka_bootstrap) as world:
        yield world


def api_settings(world: World, kafka_bootstrap: str, **overrides: object) -> ApiSettings:
    """Settings of an app on the world's database and topics."""
    values: dict[str, object] = {
        "database_url": world.url,
        "kafka_bootstrap_servers": kafka_bootstrap,
        "api_jwt_secret": "test-secret",
        "raw_topic": world.topics["raw"],
        "alarms_topic": world.topics["alarms"],
        "dead_letters_topic": world.topics["dead_letters"],
        "api_manual_clear_rules": ["hot_manual"],
        "api_key_cache_s": 0.0,
        "api_flows_dir": world.flows_dir,
        # The test session's flows end with it (tests/integration/test_api_flow_versions.py
        # shows flows outliving a supervisor).
        "api_flows_outlive_api": False,
    }
    values.update(overrides)
    return ApiSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def api(api_world: World, kafka_bootstrap: str) -> Iterator[TestClient]:
    """A TestClient of an app on the world's database (lifespan run once per session)."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(api_settings(api_world, kafka_bootstrap))) as client:
        yield client


@pytest.fixture(scope="session")
def api_db(api_world: World) -> Iterator[psycopg.Connection]:
    """An owner connection to the world's database (autocommit)."""
    with psycopg.connect(api_world.url, autocommit=True) as conn:
        yield conn
