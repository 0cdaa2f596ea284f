"""Fixtures of the console tests: an API served by uvicorn, Debian's Chromium, Kafka records.

Test modules load it as a plugin::

    pytest_plugins = ["tests.integration.console_harness"]

The API runs as a real process (``uvicorn api.main:app``) on a database of
its own (the API tests' fixture data: tenants ``plant-a`` and ``plant-b``,
keys per role), with fresh readings of ``press-1`` over the last ten
minutes so the Device page has something to draw. Its gateway metrics
targets are a :class:`FakeMetrics` server on loopback (a stand-in for an
edge gateway's ``/metrics``, serving whatever text a test gives it) and a
free port (a gateway that is down). Chromium is the Debian
package (``deploy/browser.sh`` installs it), driven by Playwright for
Python through ``executable_path``: Playwright's own browser download is
not needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.timescale.rows import SPEC_BY_TYPE
from connectors.timescale.writer import TimescaleWriter
from schemas.models import Alarm, Reading, adapter
from tests.integration.api_harness import World, world_database
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("STREAMFORGE_SCREENSHOTS", REPO / "build" / "console-screenshots"))
FRESH = 600
"""Readings of press-1 temperature in the last ten minutes (one a second)."""


def chromium_path() -> str:
    """Debian's Chromium (or $STREAMFORGE_CHROMIUM)."""
    found = os.environ.get("STREAMFORGE_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("chromium not installed: run `bash deploy/browser.sh` (make test does)")
    return found


class FakeMetrics:
    """A real HTTP server on loopback answering ``GET /metrics`` with :attr:`text`.

    The console scrapes it as it scrapes a gateway process's metrics server.
    """

    def __init__(self) -> None:
        self.text = ""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == "/metrics"
                body = fake.text.encode() if found else b"not found"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Console:
    """A running console: its URL, its world, its topics, its database connection."""

    url: str
    world: World
    telemetry_topic: str
    bootstrap: str
    db: psycopg.Connection[Any]
    gateway: FakeMetrics
    """The first gateway metrics target; the second (:attr:`gateway_down`) answers nothing."""
    gateway_down: str

    def produce(self, topic: str, records: list[tuple[str, bytes]]) -> float:
        """Produce (key, value) records and wait for Kafka's ack; the wall time after the ack."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 0})
        for key, value in records:
            producer.produce(topic, value, key)
        producer.flush(10)
        return time.time()

    def publish_alarm(self, alarm: Alarm, store: bool = True) -> float:
        """What a flow does with a transition: the row in the database, the record on Kafka."""
        if store:
            writer = TimescaleWriter(self.world.url)
            try:
                writer.write({SPEC_BY_TYPE[Alarm]: [alarm]})
            finally:
                writer.close()
        key = f"{alarm.tenant}/{alarm.device}"
        return self.produce(self.world.topics["alarms"], [(key, adapter(Alarm).dump_json(alarm))])

    def publish_reading(self, reading: Reading) -> None:
        """A telemetry record as the Kafka sink writes it."""
        self.produce(
            self.telemetry_topic,
            [(f"{reading.tenant}/{reading.device}", adapter(Reading).dump_json(reading))],
        )


def new_alarm(device: str, rule: str, severity: str = "major", tenant: str = "plant-a") -> Alarm:
    """A freshly raised threshold alarm of a device."""
    now = datetime.now(UTC)
    return Alarm(
        id=f"console-{uuid.uuid4().hex[:12]}",
        tenant=tenant,
        device=device,
        metric="temperature",
        rule=rule,
        kind="threshold",
        severity=severity,  # type: ignore[arg-type]
        state="raised",
        transition="raised",
        seq=1,
        ts=now,
        raised_at=now,
        value=97.0,
        threshold=90.0,
        message=f"temperature 97 above 90 ({rule})",
    )


def _fresh_readings(url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        Reading("press-1", "temperature", now - timedelta(seconds=FRESH - i), 60 + (i % 60) / 3,
                "plant-a", source="http", unit="°C")
        for i in range(FRESH)
    ]  # fmt: skip
    writer = TimescaleWriter(url)
    try:
        writer.write({SPEC_BY_TYPE[Reading]: rows})
    finally:
        writer.close()


@pytest.fixture(scope="module")
def console(database_url: str, kafka_bootstrap: str) -> Iterator[Console]:
    """``uvicorn api.main:app`` on a fresh world database, until the module ends."""
    with world_database(database_url, kafka_bootstrap, prefix="streamforge_console_test_") as world:
        _fresh_readings(world.url)
        telemetry = f"sf-console-test-{uuid.uuid4().hex[:8]}.telemetry"
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for f in admin.create_topics([NewTopic(telemetry, 3, 1)]).values():
            f.result(10)
        port = free_port()
        gateway, gateway_down = FakeMetrics(), f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
        env.update(
            STREAMFORGE_DATABASE_URL=world.url,
            STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            STREAMFORGE_RAW_TOPIC=world.topics["raw"],
            STREAMFORGE_ALARMS_TOPIC=world.topics["alarms"],
            STREAMFORGE_DEAD_LETTERS_TOPIC=world.topics["dead_letters"],
            STREAMFORGE_API_SUPERVISE_FLOWS="false",
            STREAMFORGE_API_FLOWS_DIR=world.flows_dir,
            STREAMFORGE_API_KEY_CACHE_S="0",
            STREAMFORGE_CONSOLE_TELEMETRY_TOPIC=telemetry,
            STREAMFORGE_CONSOLE_TICK_S="0.2",
            STREAMFORGE_CONSOLE_METRICS_TARGETS=f"127.0.0.1:{free_port()}",
            STREAMFORGE_CONSOLE_GATEWAY_TARGETS=f"{gateway.target},{gateway_down}",
            STREAMFORGE_CONSOLE_GATEWAY_MAX_AGE_S="60",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port),
             "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    pytest.fail(f"the API did not start: {err[-2000:]}")
                assert time.monotonic() < deadline, "the API was not ready within 60 s"
                time.sleep(0.2)
            with psycopg.connect(world.url, autocommit=True) as db:
                yield Console(url, world, telemetry, kafka_bootstrap, db, gateway, gateway_down)
        finally:
            gateway.close()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for f in admin.delete_topics([telemetry]).values():
                with contextlib.suppress(Exception):
                    f.result(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), one per module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def login(browser: Any, console: Console, role: str, tenant: str = "plant-a") -> Any:
    """A new page logged in with the tenant's key of that role, on the Plant page."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(20_000)
    page.goto(console.url + "/")
    page.fill("#key", console.world.keys[(tenant, role)])
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-ready=plant]")
    return page


def screenshot(page: Any, name: str) -> None:
    """Save a screenshot for the README (build/console-screenshots/ by default)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)
