"""Query latency of the REST API on 10 million stored readings. Prints figures and writes JSON.

    .venv/bin/python -m tests.bench.bench_api_queries              # load once, then measure
    .venv/bin/python -m tests.bench.bench_api_queries --requests 500
    .venv/bin/python -m tests.bench.bench_api_queries --reload     # drop and load again
    .venv/bin/python -m tests.bench.bench_api_queries --drop       # measure, then drop the data

Writes ``tests/bench/reports/bench_api_queries.json``. Needs TimescaleDB
and Kafka (``make up``; the API wants Kafka for ``/readyz`` only).

**Data.** A database of its own, ``streamforge_bench_api_queries`` (from
template1, so TimescaleDB's hypertables and chunks are the real ones),
kept between runs because loading takes a minute or two: a run finds the
data loaded and skips to the measurements; ``--reload`` drops and loads it
again, ``--drop`` removes it at the end (about 2 GB). Tenant ``bench``,
``--devices`` x 5 metrics (100 series by default) with one reading every
``--period`` seconds (6 s), ``--rows`` readings in all (10,000,000: 100,000
per series, 6.9 days, 7 daily chunks), written server-side by ``INSERT ...
SELECT`` over ``generate_series`` (one statement per day, time order, like
the sink's appends), then the ``1m`` and ``1h`` rollups of every series
aggregated from those readings for the whole week (as the flow would have
written them), then ``ANALYZE``. The row counts actually present are
counted and recorded.

**Measurements.** ``uvicorn api.main:app`` (1 worker, httptools, no access
log) in a subprocess on loopback, asked by one keep-alive ``httpx``
client, one request at a time (latency, not throughput), ``--warmup``
requests first, then ``--requests`` per scenario; each answer is checked
(status and number of items). A scenario interrupted by an error (another
test run restarting the shared database) is measured again from its
warm-up once the API is ready (``attempts`` in the report):

- ``rollups_1h_week``: ``GET /rollups`` tier 1h over the week of one series
  (167 windows);
- ``rollups_1m_to_1h_week``: the 1m tier re-bucketed to 1 h by the API over
  the same week (10,000 windows merged into 167);
- ``readings_1h_one_metric``: ``GET /readings``, one hour (600 readings) of
  one series, a random hour of the week each time;
- ``readings_1h_all_metrics``: ``/readings`` serves one series per request
  (``metric`` is required), so a device's five metrics are five requests:
  the time of all five, one after the other.

``sql_ms_p50`` next to each is the same query straight on the database
(psycopg, prepared, as the owner), to tell the database's share from the
API's. Latencies are wall-clock from the client: the machine's two cores
are shared by the client, uvicorn, PostgreSQL, Kafka and whatever else runs
(``load_average_1m`` at start and end in the report).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import httpx
import psycopg

from api.keys import create_key
from connectors.timescale.migrate import migrate
from schemas.settings import Settings
from tests.bench.bench_api import serve_api

REPORT = Path(__file__).with_name("reports") / "bench_api_queries.json"
DATABASE = "streamforge_bench_api_queries"
TENANT = "bench"
METRICS = ("temperature", "pressure", "vibration", "current", "flow")
T0 = datetime(2026, 1, 5, tzinfo=UTC)
"""Start of the data (a Monday); the week is [T0, T0 + 7 days)."""
WEEK = timedelta(days=7)


def _url(base: str, name: str) -> str:
    return urlunparse(urlparse(base)._replace(path="/" + name))


def _exists(base_url: str) -> bool:
    with psycopg.connect(base_url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
    return row is not None


def _drop(base_url: str) -> None:
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def _create(base_url: str) -> None:
    with psycopg.connect(base_url, autocommit=True) as conn:
        for attempt in range(40):
            try:
                conn.execute(f'CREATE DATABASE "{DATABASE}" TEMPLATE template1')
                return
            except psycopg.errors.ObjectInUse:  # TimescaleDB's scheduler touches template1
                if attempt == 39:
                    raise
                time.sleep(0.2 + random.random() * 0.3)


def load_seconds(url: str) -> dict[str, float]:
    """Seconds the load took, by kind of step (from ``bench_progress``)."""
    seconds: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for step, took in conn.execute("SELECT step, s FROM bench_progress"):
            kind = step.rsplit(" day ", 1)[0]
            seconds[kind] = round(seconds.get(kind, 0.0) + took, 1)
    return seconds


def counts(url: str) -> dict[str, int]:
    """Rows actually stored: readings, rollups by tier, series, chunks of readings."""
    with psycopg.connect(url, autocommit=True) as conn:
        readings = conn.execute("SELECT count(*) FROM readings").fetchone()
        tiers = conn.execute("SELECT tier, count(*) FROM rollups GROUP BY tier").fetchall()
        chunks = conn.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()
    assert readings is not None and chunks is not None
    out = {"readings": int(readings[0]), "readings_chunks": int(chunks[0])}
    out.update({f"rollups_{tier}": int(n) for tier, n in tiers})
    return out


_READINGS_DAY = (
    "INSERT INTO readings (tenant, device, metric, ts, value, quality, source, unit)"
    " SELECT %(tenant)s, s.device, s.metric, %(t0)s + make_interval(secs => g * %(period)s::int),"
    " round((50 + 20 * sin(g / 300.0 + s.n) + random() * 2)::numeric, 3)::float8,"
    " 'good', 'bench', 'u'"
    " FROM generate_series(%(first)s::int, %(last)s::int) g CROSS JOIN bench_series s"
)
"""One day of every series, in time order (the outer loop), as a sink appends."""
_ROLLUPS_DAY = (
    "INSERT INTO rollups (tenant, device, metric, tier, window_start, window_end,"
    " count, min, max, sum, mean, var, first, last, first_ts, last_ts)"
    " SELECT tenant, device, metric, %(tier)s, b, b + %(width)s::interval,"
    " count(*), min(value), max(value), sum(value), avg(value), coalesce(var_pop(value), 0),"
    " first(value, ts), last(value, ts), min(ts), max(ts)"
    " FROM (SELECT *, time_bucket(%(width)s::interval, ts) AS b FROM readings"
    "       WHERE ts >= %(start)s AND ts < %(end)s) r"
    " GROUP BY tenant, device, metric, b"
)
"""One day of one tier aggregated from the readings (first/last: TimescaleDB's, Apache too)."""


def _steps(devices: int, rows: int, period_s: int) -> list[tuple[str, str, dict[str, Any]]]:
    per_series = rows // (devices * len(METRICS))
    per_day = 86_400 // period_s
    days = -(-per_series // per_day)
    steps: list[tuple[str, str, dict[str, Any]]] = []
    for day in range(days):
        first, last = day * per_day, min(per_series, (day + 1) * per_day) - 1
        params = {"tenant": TENANT, "t0": T0, "period": period_s, "first": first, "last": last}
        steps.append((f"readings day {day}", _READINGS_DAY, params))
    for tier, width in (("1m", "1 minute"), ("1h", "1 hour")):
        for day in range(days):
            start = T0 + timedelta(days=day)
            params = {"tier": tier, "width": width, "start": start, "end": start + WEEK / 7}
            steps.append((f"rollups {tier} day {day}", _ROLLUPS_DAY, params))
    steps.append(("analyze readings", "ANALYZE readings", {}))
    steps.append(("analyze rollups", "ANALYZE rollups", {}))
    return steps


def load(url: str, devices: int, rows: int, period_s: int) -> dict[str, float]:
    """Write the readings and rollups (see the module docstring); seconds per kind of step.

    Resumable: each step (a day of readings, a day of a rollup tier) commits
    with its mark in ``bench_progress``, so an interrupted load (another
    test restarting the shared database, Ctrl-C) goes on where it stopped,
    here after a wait for the database or on the next run.
    """
    for attempt in range(60):
        try:
            return _load_steps(url, devices, rows, period_s)
        except psycopg.OperationalError as exc:
            print(f"  database gone ({str(exc).strip()[:80]}); retrying in 5 s", flush=True)
            if attempt == 59:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def _load_steps(url: str, devices: int, rows: int, period_s: int) -> dict[str, float]:
    seconds: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET work_mem = '256MB'")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_progress (step text PRIMARY KEY, s float8)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_series AS SELECT format('dev-%%s',"
            " lpad(d::text, 3, '0')) AS device, m AS metric, d * 10 + k AS n"
            " FROM generate_series(0, %s::int) d, unnest(%s::text[]) WITH ORDINALITY AS mm(m, k)",
            (devices - 1, list(METRICS)),
        )
        done = {step: s for step, s in conn.execute("SELECT step, s FROM bench_progress")}
        for step, statement, params in _steps(devices, rows, period_s):
            if step not in done:
                started = time.perf_counter()
                with conn.transaction():
                    conn.execute(statement, params)
                    done[step] = round(time.perf_counter() - started, 1)
                    conn.execute("INSERT INTO bench_progress VALUES (%s, %s)", (step, done[step]))
                print(f"  {step}: {done[step]} s", flush=True)
            kind = step.rsplit(" day ", 1)[0]
            seconds[kind] = round(seconds.get(kind, 0.0) + done[step], 1)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_loaded (devices int, rows bigint, period_s int,"
            " loaded_at timestamptz DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO bench_loaded (devices, rows, period_s) VALUES (%s, %s, %s)",
            (devices, rows, period_s),
        )
    return seconds


def loaded_as(url: str, table: str = "bench_loaded") -> dict[str, Any] | None:
    """How the data was loaded (devices, rows, period), or None if it is not (completely).

    With ``table="bench_config"``: how a load, maybe unfinished, was started.
    """
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT devices, rows, period_s, loaded_at FROM {table}"
                " ORDER BY loaded_at DESC LIMIT 1"
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    if row is None:
        return None
    return {"devices": row[0], "rows": row[1], "period_s": row[2], "loaded_at": row[3].isoformat()}


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "requests": len(ordered),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def _timed(call: Callable[[], None], warmup: int, count: int) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def _wait_ready(client: httpx.Client, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                time.sleep(2)  # let the pool replace its broken connections
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"API not ready again within {timeout} s")


def _hour(rng: random.Random, span_hours: int) -> datetime:
    return T0 + timedelta(hours=rng.randrange(span_hours))


def measure(
    url: str, port: int, key: str, device: str, warmup: int, count: int, period_s: int, span: float
) -> dict[str, Any]:
    """Every scenario through the API, and its SQL straight on the database."""
    headers = {"X-API-Key": key}
    rng = random.Random(7)
    span_hours = int(span // 3600)
    per_hour = 3600 // period_s
    windows_1h = -(-int(span) // 3600)  # the last, partial hour has its window too
    week = {"start": T0.isoformat(), "end": (T0 + WEEK).isoformat(), "limit": 1000}
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:

        def get(path: str, params: dict[str, Any], items: int) -> None:
            r = client.get(path, params=params)
            if r.status_code != 200 or len(r.json()["items"]) != items:
                raise RuntimeError(f"{path} {params}: {r.status_code} {r.text[:300]}")

        def rollups_1h() -> None:
            q = {**week, "device": device, "metric": "temperature", "tier": "1h"}
            get("/rollups", q, windows_1h)

        def rollups_rebucketed() -> None:
            q = {**week, "device": device, "metric": "temperature", "tier": "1m", "interval": "1h"}
            get("/rollups", q, windows_1h)

        def readings_params(metric: str) -> dict[str, Any]:
            start = _hour(rng, span_hours)
            return {
                "device": device, "metric": metric, "start": start.isoformat(),
                "end": (start + timedelta(hours=1)).isoformat(), "limit": 10_000,
            }  # fmt: skip

        def readings_one() -> None:
            get("/readings", readings_params("temperature"), per_hour)

        def readings_all() -> None:
            start = _hour(rng, span_hours)
            for metric in METRICS:
                q = {
                    "device": device, "metric": metric, "start": start.isoformat(),
                    "end": (start + timedelta(hours=1)).isoformat(), "limit": 10_000,
                }  # fmt: skip
                get("/readings", q, per_hour)

        scenarios: dict[str, Callable[[], None]] = {
            "rollups_1h_week": rollups_1h,
            "rollups_1m_to_1h_week": rollups_rebucketed,
            "readings_1h_one_metric": readings_one,
            "readings_1h_all_metrics": readings_all,
        }
        for name, call in scenarios.items():
            for attempt in range(1, 11):
                try:
                    results[name] = _percentiles(_timed(call, warmup, count))
                    break
                except (httpx.HTTPError, RuntimeError) as exc:
                    # Other test runs restart the shared database now and then:
                    # wait for the API to be ready again and measure afresh.
                    print(f"{name}: interrupted ({str(exc)[:120]}); again", flush=True)
                    if attempt == 10:
                        raise
                    _wait_ready(client)
            results[name]["attempts"] = attempt
            print(f"{name:<26} {results[name]}", flush=True)
    for attempt in range(10):
        try:
            sql = _sql_only(url, device, warmup, count, rng, span_hours)
            break
        except psycopg.OperationalError:
            if attempt == 9:
                raise
            time.sleep(5)  # the shared database restarted: measure again
    for name, p50 in sql.items():
        results[name]["sql_ms_p50"] = p50
    return results


def _sql_only(
    url: str, device: str, warmup: int, count: int, rng: random.Random, span_hours: int
) -> dict[str, float]:
    """p50 of the scenarios' queries straight on the database (as the owner, prepared)."""
    out: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        week = {"t": TENANT, "d": device, "m": "temperature", "s": T0, "e": T0 + WEEK}

        def rollups() -> None:
            conn.execute(
                "SELECT device, metric, tier, window_start, window_end, count, min, max, sum,"
                " mean, first, last FROM rollups WHERE tenant = %(t)s AND device = %(d)s"
                " AND metric = %(m)s AND tier = '1h' AND window_start >= %(s)s"
                " AND window_start < %(e)s ORDER BY window_start LIMIT 1001",
                week,
            ).fetchall()

        def readings() -> None:
            start = _hour(rng, span_hours)
            conn.execute(
                "SELECT device, metric, ts, value, value_text, value_bool, quality, source, unit"
                " FROM readings WHERE tenant = %(t)s AND device = %(d)s AND metric = %(m)s"
                " AND ts >= %(s)s AND ts < %(e)s ORDER BY ts LIMIT 10001",
                {**week, "s": start, "e": start + timedelta(hours=1)},
            ).fetchall()

        for name, call in (("rollups_1h_week", rollups), ("readings_1h_one_metric", readings)):
            out[name] = _percentiles(_timed(call, warmup, count))["p50_ms"]
    return out


def _retrying(what: Callable[[], Any]) -> Any:
    """``what()``, again after 5 s while the shared database is down (other test runs)."""
    for attempt in range(60):
        try:
            return what()
        except psycopg.OperationalError as exc:
            if attempt == 59:
                raise
            print(f"  database unavailable ({str(exc).strip()[:60]}); waiting", flush=True)
            time.sleep(5)
    raise AssertionError("unreachable")


def _prepare_api(url: str) -> tuple[str, str | None]:
    """Migrate (the API role's rights), a viewer key of the bench tenant, the database size."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        key = create_key(conn, TENANT, "viewer", "bench_api_queries")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        row = size.fetchone()
    return key, row[0] if row else None


def main(argv: list[str] | None = None) -> int:
    """Entry point: load if needed, measure, print, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--devices", type=int, default=20, help="x 5 metrics = series")
    parser.add_argument("--period", type=int, default=6, help="seconds between readings")
    parser.add_argument("--requests", type=int, default=200, help="measured per scenario")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", default="dev-007", help="the device queried")
    parser.add_argument("--reload", action="store_true", help="drop the data and load it again")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    args = parser.parse_args(argv)
    settings = Settings()
    url = _url(settings.database_url, DATABASE)
    load_avg_start = round(os.getloadavg()[0], 2)
    wanted = {"devices": args.devices, "rows": args.rows, "period_s": args.period}
    exists = _retrying(lambda: _exists(settings.database_url))
    found = _retrying(lambda: loaded_as(url)) if exists else None
    started = _retrying(lambda: loaded_as(url, "bench_config")) if exists else None
    load_steps: dict[str, Any] | None = None
    if found is None or {k: found[k] for k in wanted} != wanted or args.reload:
        if args.reload or started is None or {k: started[k] for k in wanted} != wanted:
            print(f"loading {args.rows:,} readings into {DATABASE} ...", flush=True)
            _drop(settings.database_url)
            _create(settings.database_url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE bench_config (devices int, rows bigint, period_s int,"
                    " loaded_at timestamptz DEFAULT now())"
                )
                conn.execute("INSERT INTO bench_config VALUES (%s, %s, %s)", tuple(wanted.values()))
        else:
            print(f"resuming the unfinished load of {DATABASE} ...", flush=True)
        load_steps = load(url, args.devices, args.rows, args.period)
        found = loaded_as(url)
    else:
        print(f"{DATABASE} already loaded ({found}); --reload to load again", flush=True)
    stored = _retrying(lambda: counts(url))
    print(f"stored: {stored}", flush=True)
    key, size = _retrying(lambda: _prepare_api(url))
    span_s = (args.rows // (args.devices * len(METRICS))) * args.period
    env = {
        **os.environ,
        "STREAMFORGE_DATABASE_URL": url,
        "STREAMFORGE_API_SUPERVISE_FLOWS": "false",
        "STREAMFORGE_LOG_LEVEL": "WARNING",
    }
    server_log = Path(tempfile.gettempdir()) / "bench_api_queries.uvicorn.log"
    server_log.unlink(missing_ok=True)
    proc, port = serve_api(env, workers=1, log=server_log)
    try:
        results = measure(
            url, port, key, args.device, args.warmup, args.requests, args.period, span_s
        )
    except (httpx.HTTPError, RuntimeError):
        print(f"uvicorn's log ({server_log}):\n{server_log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        proc.terminate()
        proc.wait(20)
    report = {
        "benchmark": "api_queries",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_start": load_avg_start,
            "load_average_1m_end": round(os.getloadavg()[0], 2),
        },
        "data": {
            "database": DATABASE,
            "database_size": size,
            "loaded": found,
            "load_seconds": _retrying(lambda: load_seconds(url)),
            "loaded_by_this_run": load_steps is not None,
            "stored_rows": stored,
            "series": args.devices * len(METRICS),
            "period_s": args.period,
            "days": round(span_s / 86_400, 2),
        },
        "client": "one keep-alive httpx client, sequential requests, uvicorn 1 worker on loopback",
        "warmup_requests": args.warmup,
        "results": results,
    }
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"report: {REPORT}")
    if args.drop:
        _drop(settings.database_url)
        print(f"dropped {DATABASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
