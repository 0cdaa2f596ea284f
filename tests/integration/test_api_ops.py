"""Operations endpoints, OpenAPI, start-up checks, and the API served by a real uvicorn."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.db import Database, DatabaseSetupError
from api.main import create_app
from tests.integration.api_harness import World, api_settings
from tests.ports import free_port

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = [pytest.mark.timescale, pytest.mark.kafka]


def test_health_ready_and_metrics(api: TestClient):
    assert api.get("/healthz").json()["status"] == "ok"
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "kafka": "ok"}
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE streamforge_api_ingest_accepted_total counter" in metrics.text


def test_readyz_is_503_without_kafka(api_world: World, kafka_bootstrap: str):
    settings = api_settings(
        api_world, kafka_bootstrap, kafka_bootstrap_servers="127.0.0.1:1", api_kafka_timeout_s=1.0
    )
    with TestClient(create_app(settings)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["kafka"].startswith("unavailable")
        # Reads still work; writes that need Kafka say so.
        q = {"device": "press-1", "metric": "temperature", "limit": 1}
        assert client.get("/readings", params=q, headers=api_world.headers()).status_code == 200


def test_openapi_documents_every_resource_with_examples(api: TestClient):
    spec = api.get("/openapi.json").json()
    for path in ("/devices", "/devices/{device}", "/readings", "/rollups", "/readings.csv",
                 "/rollups.csv", "/events", "/alarms", "/alarms/{alarm_id}",
                 "/alarms/{alarm_id}/acknowledge", "/alarms/{alarm_id}/clear", "/ingest",
                 "/healthz", "/readyz", "/metrics", "/keys", "/flows",
                 "/flows/{name}/restart"):  # fmt: skip
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    assert schemas["AlarmOut"]["example"]["rule"] == "high_temperature"
    assert "IngestReading" in schemas
    assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])
    assert api.get("/docs").status_code == 200


def test_start_refuses_a_database_user_that_cannot_become_the_api_role(api_world: World):
    db = Database(api_world.url, role="streamforge_no_such_role")
    with pytest.raises(DatabaseSetupError, match="streamforge_no_such_role"):
        db.prepare()


def test_served_by_uvicorn(api_world: World, kafka_bootstrap: str, api_db: psycopg.Connection):
    port = free_port()
    env = {
        **os.environ,
        "STREAMFORGE_DATABASE_URL": api_world.url,
        "STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMFORGE_RAW_TOPIC": api_world.topics["raw"],
        "STREAMFORGE_ALARMS_TOPIC": api_world.topics["alarms"],
        "STREAMFORGE_DEAD_LETTERS_TOPIC": api_world.topics["dead_letters"],
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level",
         "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "uvicorn did not become ready"
            time.sleep(0.2)
        headers = api_world.headers(role="operator")
        r = httpx.get(f"{base}/devices", headers=headers)
        assert r.status_code == 200 and r.json()["items"]
        r = httpx.post(
            f"{base}/ingest",
            json=[{"device": "uv-1", "metric": "m", "value": i} for i in range(10)],
            headers=headers,
        )
        assert r.json()["accepted"] == 10
    finally:
        proc.terminate()
        proc.wait(10)
