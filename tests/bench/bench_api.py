"""How fast the REST API ingests readings over HTTP. Prints a table and writes JSON.

    .venv/bin/python -m tests.bench.bench_api                      # 1 and 2 uvicorn workers
    .venv/bin/python -m tests.bench.bench_api --workers 2 --seconds 5

Writes ``tests/bench/reports/api.json``. Needs TimescaleDB and Kafka
(``make up``): a database ``streamforge_api_bench_<random>`` and topics
``sf-bench-api-<random>.*`` are created for the run and dropped at the end.

The server is ``uvicorn api.main:app`` (``--workers``) on loopback. The
load generator is ours, in separate processes: keep-alive HTTP/1.1
connections over raw asyncio streams, each sending the same pre-built
``POST /ingest`` and reading the answer before the next (no pipelining),
so it costs far less CPU than an HTTP client library and leaves the two
cores to the server as much as possible (both still share them, and Kafka
and PostgreSQL run on the same machine). Every answer is checked: status
200 and ``"accepted":N`` for a batch of N, else it counts as an error.
Each scenario runs ``--seconds`` (bounded) after a one-second warm-up.

Scenarios: single-reading requests, and batches of 100 and 1,000 readings;
reported as requests/s, readings/s and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from api.keys import create_key
from connectors.timescale.migrate import migrate
from schemas.settings import Settings
from tests.integration.api_harness import create_database, drop_database
from tests.ports import free_port
from tests.support.kafka_tools import delete_topics

REPORT = Path(__file__).with_name("reports") / "api.json"


def _request(port: int, key: str, batch: int) -> bytes:
    items = [
        {"device": f"bench-{i % 50}", "metric": "temperature", "value": 20.0 + i % 7}
        for i in range(batch)
    ]
    body = json.dumps(items[0] if batch == 1 else items, separators=(",", ":")).encode()
    head = (
        f"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(
    port: int, request: bytes, expect: bytes, stop_at: float, start_at: float, out: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = out["latencies"]
    try:
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            done = time.perf_counter()
            if sent < start_at:
                continue  # warm-up
            if head.startswith(b"HTTP/1.1 200") and expect in body:
                out["ok"] += 1
                latencies.append(done - sent)
            else:
                out["errors"] += 1
                out.setdefault("sample_error", (head + body)[:300].decode(errors="replace"))
    finally:
        writer.close()


def _load_process(args: tuple[int, bytes, bytes, int, float, float, Any]) -> None:
    port, request, expect, connections, start_at, stop_at, queue = args
    out: dict[str, Any] = {"ok": 0, "errors": 0, "latencies": []}

    async def main() -> None:
        await asyncio.gather(
            *(
                _connection(port, request, expect, stop_at, start_at, out)
                for _ in range(connections)
            )
        )

    asyncio.run(main())
    queue.put(out)


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by ``pid`` and its children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_load(
    port: int,
    key: str,
    batch: int,
    connections: int,
    processes: int,
    seconds: float,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Drive POST /ingest with batches of ``batch`` readings; the figures of the run.

    With ``server_pid``, also the server's CPU time per request over the
    measured seconds (its process tree; Kafka's broker is not in it): a
    figure that other work on the machine disturbs far less than requests/s.
    """
    request = _request(port, key, batch)
    expect = f'"accepted":{batch}'.encode()
    start_at = time.perf_counter() + 1.0  # perf_counter is system-wide on Linux (CLOCK_MONOTONIC)
    stop_at = start_at + seconds
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    per = max(1, connections // processes)
    procs = [
        ctx.Process(
            target=_load_process, args=((port, request, expect, per, start_at, stop_at, queue),)
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    cpu_start = cpu_end = 0.0
    if server_pid is not None:
        time.sleep(max(0.0, start_at - time.perf_counter()))
        cpu_start = process_tree_cpu_s(server_pid)
        time.sleep(max(0.0, stop_at - time.perf_counter()))
        cpu_end = process_tree_cpu_s(server_pid)
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    ok = sum(r["ok"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])

    def pct(q: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)
            if latencies
            else 0.0
        )

    return {
        "batch": batch,
        "connections": per * processes,
        "requests_per_s": round(ok / seconds),
        "readings_per_s": round(ok * batch / seconds),
        "errors": sum(r["errors"] for r in results),
        "sample_error": next((r["sample_error"] for r in results if "sample_error" in r), None),
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "server_cpu_us_per_request": (
            round((cpu_end - cpu_start) / ok * 1e6) if server_pid is not None and ok else None
        ),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def serve_api(
    env: dict[str, str], workers: int, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """``uvicorn api.main:app`` in a subprocess on a free loopback port, once /readyz is 200.

    Its output goes to ``log`` if given (warnings and errors only), else nowhere.
    """
    port = free_port()
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        env=env, stdout=out, stderr=out,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("uvicorn exited during start-up")
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("uvicorn did not become ready in 60 s")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the scenarios, print a table, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 100, 1000])
    args = parser.parse_args(argv)
    settings = Settings()
    url = create_database(settings.database_url, prefix="streamforge_api_bench_")
    suffix = uuid.uuid4().hex[:8]
    topics = {k: f"sf-bench-api-{suffix}.{k}" for k in ("raw", "alarms", "dead_letters")}
    results: list[dict[str, Any]] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            key = create_key(conn, "bench", "operator", "bench")
        env = {
            **os.environ,
            "STREAMFORGE_DATABASE_URL": url,
            "STREAMFORGE_RAW_TOPIC": topics["raw"],
            "STREAMFORGE_ALARMS_TOPIC": topics["alarms"],
            "STREAMFORGE_DEAD_LETTERS_TOPIC": topics["dead_letters"],
            "STREAMFORGE_LOG_LEVEL": "WARNING",
        }
        for workers in args.workers:
            proc, port = serve_api(env, workers)
            try:
                for batch in args.batches:
                    figures = run_load(
                        port, key, batch, args.connections, args.load_processes, args.seconds,
                        server_pid=proc.pid,
                    )  # fmt: skip
                    figures["workers"] = workers
                    results.append(figures)
                    print(
                        f"workers={workers} batch={batch:>5} conns={figures['connections']}: "
                        f"{figures['requests_per_s']:>7} req/s {figures['readings_per_s']:>9} "
                        f"readings/s  p50 {figures['latency_ms_p50']} ms  "
                        f"p99 {figures['latency_ms_p99']} ms  errors {figures['errors']}  "
                        f"server CPU {figures['server_cpu_us_per_request']} us/req  "
                        f"load {figures['load_average_1m']}",
                        flush=True,
                    )
            finally:
                proc.terminate()
                proc.wait(20)
    finally:
        drop_database(settings.database_url, url)
        delete_topics(settings.kafka_bootstrap_servers, list(topics.values()))
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "benchmark": "api_ingest",
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "seconds_per_scenario": args.seconds,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"report: {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
