"""A real Prometheus scrapes the API and a flow of two processes, and the series move.

Prometheus is Debian's package, started by ``deploy/services.sh start
prometheus`` (this module does it when it is not running). It scrapes every
target listed in ``$STREAMFORGE_STATE/prometheus/targets/*.json``: the test
adds a file naming a uvicorn API and the two processes of
``python -m bytewax.run flows.ingest -i 0|1`` (simulated plant, stdout sink),
each on its own metrics port (``STREAMFORGE_METRICS_PORT`` + process id),
and removes it at the end. Then it asks Prometheus's HTTP API, as Grafana
would, and never reads the processes' metrics itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.api_harness import World
from tests.ports import free_port

pytest_plugins = ["tests.integration.api_harness"]

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = f"http://127.0.0.1:{os.environ.get('STREAMFORGE_PROMETHEUS_PORT', '9090')}"
STATE = Path(
    os.environ.get("STREAMFORGE_STATE")
    or Path(os.environ.get("STREAMFORGE_CACHE", Path.home() / ".cache/streamforge")) / "state"
)
FLOW_CONFIG = """
sources:
  - type: simulator
    name: plant
    devices: 10
    metrics: 3
    rate: 200
    partitions: 2
sinks:
  - type: stdout
    kinds: [dead_letter]
"""


def _ready() -> bool:
    try:
        return httpx.get(f"{PROMETHEUS}/-/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def prometheus() -> str:
    """The local Prometheus (started by deploy/services.sh if it is not running)."""
    if not _ready():
        subprocess.run(
            ["bash", str(REPO / "deploy" / "services.sh"), "start", "prometheus"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    assert _ready(), "Prometheus did not start: see deploy/services.sh status"
    return PROMETHEUS


def query(expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    r = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=10)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_for(expr: str, check: Any, timeout: float = 40.0) -> list[dict[str, Any]]:
    """Query until ``check(result)`` holds; the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = query(expr)
        if check(result):
            return result
        assert time.monotonic() < deadline, f"{expr}: {result}"
        time.sleep(0.5)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"{proc.args} exited: {err[-2000:]}")
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scraped(
    prometheus: str,
    api_world: World,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """An API and a two-process flow, listed for Prometheus; the run's label value."""
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "pipeline.yaml"
    config.write_text(FLOW_CONFIG)
    api_port, metrics_base = free_port(), free_port()
    while free_port() == metrics_base + 1:  # the second process's port must be free too
        metrics_base = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    api_env = {
        **env,
        "STREAMFORGE_DATABASE_URL": api_world.url,
        "STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMFORGE_RAW_TOPIC": api_world.topics["raw"],
        "STREAMFORGE_ALARMS_TOPIC": api_world.topics["alarms"],
        "STREAMFORGE_DEAD_LETTERS_TOPIC": api_world.topics["dead_letters"],
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(api_port),
             "--log-level", "warning"],
            env=api_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
    ]  # fmt: skip
    flow_env = {
        **env,
        "STREAMFORGE_CONFIG": str(config),
        "STREAMFORGE_METRICS_PORT": str(metrics_base),
    }
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    for i in (0, 1):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", "flows.ingest", "-i", str(i), "-a",
                 addresses],
                env=flow_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        )  # fmt: skip
    run = uuid.uuid4().hex[:8]
    targets = STATE / "prometheus" / "targets" / f"test-{run}.json"
    try:
        _wait_http(f"http://127.0.0.1:{api_port}/healthz", procs[0])
        for i, proc in enumerate(procs[1:]):
            _wait_http(f"http://127.0.0.1:{metrics_base + i}/health", proc)
        groups = [
            {"targets": [f"127.0.0.1:{api_port}"], "labels": {"run": run, "component": "api"}},
            {
                "targets": [f"127.0.0.1:{metrics_base}", f"127.0.0.1:{metrics_base + 1}"],
                "labels": {"run": run, "component": "flow"},
            },
        ]
        targets.write_text(json.dumps(groups))
        yield run
    finally:
        targets.unlink(missing_ok=True)
        for proc in procs:
            proc.kill()
            proc.wait()


def test_flow_processes_serve_health_on_their_own_ports(scraped: str) -> None:
    up = wait_for(f'up{{run="{scraped}"}}', lambda r: len(r) == 3 and all(
        s["value"][1] == "1" for s in r))  # fmt: skip
    assert {s["metric"]["component"] for s in up} == {"api", "flow"}


def test_prometheus_sees_the_flow_counters_move(scraped: str) -> None:
    expr = f'sum by (instance) (streamforge_readings_total{{run="{scraped}"}})'
    first = wait_for(expr, lambda r: len(r) == 2 and all(float(s["value"][1]) > 0 for s in r))
    before = {s["metric"]["instance"]: float(s["value"][1]) for s in first}
    # Both processes' counters grow while readings flow (a scrape every 2 s).
    wait_for(
        expr,
        lambda r: (
            len(r) == 2 and all(float(s["value"][1]) > before[s["metric"]["instance"]] for s in r)
        ),
    )
    rate = query(f'sum(rate(streamforge_readings_total{{run="{scraped}"}}[10s]))')
    assert rate and float(rate[0]["value"][1]) > 0


def test_prometheus_has_process_and_api_series(scraped: str) -> None:
    # prometheus_client's process collector, in every process
    wait_for(f'process_resident_memory_bytes{{run="{scraped}"}}', lambda r: len(r) == 3)
    # the API's own counters are there under their names
    names = httpx.get(
        f"{PROMETHEUS}/api/v1/label/__name__/values",
        params={"match[]": f'{{run="{scraped}", component="api"}}'},
        timeout=10,
    ).json()["data"]
    assert "process_cpu_seconds_total" in names and "up" in names


def test_prometheus_has_bytewax_step_latencies_of_both_processes(scraped: str) -> None:
    # Bytewax's own per-step timings, served through each process's /metrics.
    expr = (
        f'bytewax_stateful_batch_on_batch_duration_seconds_count{{run="{scraped}",'
        f' step_id=~".*[.]series"}}'
    )
    result = wait_for(expr, lambda r: len({s["metric"]["instance"] for s in r}) == 2)
    assert all(float(s["value"][1]) > 0 for s in result)
