"""The Pipeline page's gateway figures (api/console/pipeline.py): parsing, warnings, scrape."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from api.console.pipeline import gateway_figures, gateway_warnings, scrape, summarize_gateway
from api.console.settings import ConsoleSettings
from connectors.kafka.gateway import FORWARD_FAILURES, FORWARDED
from connectors.runtime.metrics import render
from connectors.runtime.spool import Spool, SpoolConfig
from tests.ports import free_port

GATEWAY_TEXT = """\
# HELP streamforge_spool_bytes Bytes in the spool not yet forwarded
# TYPE streamforge_spool_bytes gauge
streamforge_spool_bytes{spool="0"} 4096.0
streamforge_spool_bytes{spool="1"} 1024.0
# TYPE streamforge_spool_records gauge
streamforge_spool_records{spool="0"} 40.0
streamforge_spool_records{spool="1"} 10.0
# TYPE streamforge_spool_oldest_age_seconds gauge
streamforge_spool_oldest_age_seconds{spool="0"} 12.5
streamforge_spool_oldest_age_seconds{spool="1"} 30.0
# TYPE streamforge_spool_appended_records_total counter
streamforge_spool_appended_records_total{spool="0"} 1000.0
streamforge_spool_appended_records_total{spool="1"} 500.0
# TYPE streamforge_spool_dropped_records_total counter
streamforge_spool_dropped_records_total{reason="full",spool="0"} 7.0
streamforge_spool_dropped_records_total{reason="age",spool="1"} 3.0
# TYPE streamforge_spool_blocked_seconds_total counter
streamforge_spool_blocked_seconds_total{spool="0"} 1.5
# TYPE streamforge_gateway_forwarded_records_total counter
streamforge_gateway_forwarded_records_total{spool="0"} 950.0
streamforge_gateway_forwarded_records_total{spool="1"} 490.0
# TYPE streamforge_gateway_forward_failures_total counter
streamforge_gateway_forward_failures_total{spool="1"} 2.0
# TYPE streamforge_readings_total counter
streamforge_readings_total{source="plant"} 99.0
"""


def test_gateway_figures_are_summed_over_spools() -> None:
    g = summarize_gateway(GATEWAY_TEXT)
    assert g == {
        "spool_bytes": 5120.0,
        "spool_records": 50.0,
        "appended": 1500.0,
        "forwarded": 1440.0,
        "forward_failures": 2.0,
        "blocked_s": 1.5,
        "oldest_age_s": 30.0,  # the oldest of any spool, not a sum
        "dropped": {"full": 7.0, "age": 3.0, "corrupt": 0.0},
        "dropped_total": 10.0,
        "spools": ["0", "1"],
    }


def test_a_healthy_gateway_has_no_warnings() -> None:
    healthy = "\n".join(
        line for line in GATEWAY_TEXT.splitlines() if "dropped_records_total{" not in line
    )
    figures = gateway_figures(healthy, max_age_s=60.0)
    assert figures["dropped"] == {"full": 0.0, "age": 0.0, "corrupt": 0.0}
    assert figures["warnings"] == []
    assert figures["max_age_s"] == 60.0


def test_drops_and_an_old_record_are_warned_about() -> None:
    figures = summarize_gateway(GATEWAY_TEXT)
    assert gateway_warnings(figures, max_age_s=60.0) == ["10 records dropped (full 7, age 3)"]
    # the oldest record (30 s) over a 20 s limit
    assert gateway_warnings(figures, max_age_s=20.0) == [
        "10 records dropped (full 7, age 3)",
        "oldest record 30 s old (over 20 s)",
    ]
    # exactly at the limit is not over it
    assert gateway_warnings(figures, max_age_s=30.0) == ["10 records dropped (full 7, age 3)"]


def test_a_target_without_spool_metrics_is_warned_about() -> None:
    figures = gateway_figures('streamforge_readings_total{source="plant"} 1.0\n', 60.0)
    assert figures["spools"] == []
    assert figures["spool_records"] == 0.0
    assert figures["warnings"] == [
        "no spool metrics: not a gateway, or its spools are not open yet"
    ]


def test_an_unknown_drop_reason_is_counted_too() -> None:
    g = summarize_gateway('streamforge_spool_dropped_records_total{reason="other",spool="0"} 2\n')
    assert g["dropped"] == {"full": 0.0, "age": 0.0, "corrupt": 0.0, "other": 2.0}
    assert g["dropped_total"] == 2.0


def test_the_figures_of_the_real_spool_and_forwarder_metrics(tmp_path: Path) -> None:
    """The names the page reads are the ones connectors/ exports (rendered, then parsed)."""
    name = f"console-{uuid.uuid4().hex[:8]}"
    now = [1000.0]
    spool = Spool(SpoolConfig(path=str(tmp_path), max_age="50s"), name=name, clock=lambda: now[0])
    try:
        spool.append([b"a" * 10, b"b" * 10])  # expire by age below
        now[0] += 100
        expired = spool.read()
        assert expired.records == []  # both older than max_age: dropped (age)
        spool.commit(expired)  # as the forwarder does: gone from the spool
        spool.append([b"c" * 10])
        now[0] += 75
        spool.append([b"d" * 10, b"e" * 10])  # publishes the oldest record's age: 75 s
        FORWARDED.inc(4, spool=name)
        FORWARD_FAILURES.inc(1, spool=name)
        text = "\n".join(
            line for line in render().splitlines() if line.startswith("#") or f'"{name}"' in line
        )
        figures = gateway_figures(text, max_age_s=60.0)
    finally:
        spool.close()
    assert figures["spools"] == [name]
    assert figures["spool_records"] == 3.0
    assert figures["spool_bytes"] == spool.pending_bytes > 0
    assert figures["oldest_age_s"] == 75.0
    assert figures["appended"] == 5.0
    assert figures["forwarded"] == 4.0
    assert figures["forward_failures"] == 1.0
    assert figures["dropped"] == {"full": 0.0, "age": 2.0, "corrupt": 0.0}
    assert figures["warnings"] == [
        "2 records dropped (age 2)",
        "oldest record 75 s old (over 60 s)",
    ]


@pytest.fixture
def metrics_server() -> Iterator[str]:
    """A tiny /metrics server on loopback serving GATEWAY_TEXT (a gateway's stand-in)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = GATEWAY_TEXT.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_scrape_reads_each_gateway_and_reports_one_that_is_down(metrics_server: str) -> None:
    down = f"127.0.0.1:{free_port()}"
    figures = partial(gateway_figures, max_age_s=60.0)
    up_row, down_row = asyncio.run(scrape([metrics_server, down], timeout=2.0, figures=figures))
    assert up_row["target"] == metrics_server and up_row["up"] is True
    assert up_row["spool_records"] == 50.0 and up_row["forwarded"] == 1440.0
    assert up_row["warnings"] == ["10 records dropped (full 7, age 3)"]
    assert down_row["target"] == down and down_row["up"] is False
    assert "error" in down_row


def test_gateway_targets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMFORGE_CONSOLE_GATEWAY_TARGETS", raising=False)
    assert ConsoleSettings().gateways() == ["127.0.0.1:9410"]  # make demo's gateway
    monkeypatch.setenv("STREAMFORGE_CONSOLE_GATEWAY_TARGETS", "edge-1:9410, edge-2:9410,")
    monkeypatch.setenv("STREAMFORGE_CONSOLE_GATEWAY_MAX_AGE_S", "120")
    settings = ConsoleSettings()
    assert settings.gateways() == ["edge-1:9410", "edge-2:9410"]
    assert settings.gateway_max_age_s == 120.0
