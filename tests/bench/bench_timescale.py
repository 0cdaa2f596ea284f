"""How fast readings reach TimescaleDB, by each write path. Prints a table and writes JSON.

    .venv/bin/python -m tests.bench.bench_timescale            # 200k readings, best of 3
    .venv/bin/python -m tests.bench.bench_timescale --rows 500000 --repeat 1

Runs in a database of its own (``streamforge_bench_<random>``, created from
template1 so it has the Apache TimescaleDB edition, dropped at the end) and
writes ``tests/bench/reports/timescale.json``. Rows per second, best of
``--repeat`` runs, each into emptied tables:

- ``copy_plain``: binary COPY straight into the ``readings`` hypertable, no
  duplicate handling: the ceiling.
- ``sink_direct``: :class:`connectors.timescale.sink.TimescaleSink`'s partition,
  ``write_batch`` of ``(kind, record)`` pairs, default config (COPY straight
  in; staging only if a key exists): what the flow gets.
- ``sink_staging``: the same with ``direct_copy: false``, i.e. every batch
  through COPY into a staging table + ``INSERT ... ON CONFLICT DO NOTHING``.
- ``sink_replay``: the default sink writing the same readings again (all
  duplicates: the direct COPY fails on the first key, then staging).
- ``executemany``: ``INSERT ... ON CONFLICT DO NOTHING`` by
  ``cursor.executemany`` (psycopg pipelines it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from connectors.timescale.config import TimescaleSinkConfig
from connectors.timescale.migrate import migrate
from connectors.timescale.rows import READINGS, reading_row
from connectors.timescale.sink import TimescaleSink
from schemas.models import Reading
from schemas.settings import Settings

REPORT = Path(__file__).with_name("reports") / "timescale.json"


def make_readings(n: int, devices: int = 200, metrics: int = 5) -> list[tuple[str, Reading]]:
    """n readings of devices x metrics series, one per second per series, recent."""
    series = devices * metrics
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=n // series + 60)
    out = []
    for i in range(n):
        s = i % series
        ts = start + timedelta(seconds=i // series)
        r = Reading(
            f"device-{s // metrics:04d}", f"metric-{s % metrics}", ts, 20.0 + (i % 97) * 0.1
        )
        out.append(("telemetry", r))
    return out


def create_database(admin_url: str) -> tuple[str, str]:
    name = f"streamforge_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for attempt in range(40):
            try:
                conn.execute(f"CREATE DATABASE {name}")
                break
            except psycopg.errors.ObjectInUse:  # TimescaleDB's scheduler visiting template1
                if attempt == 39:
                    raise
                time.sleep(0.25)
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    migrate(url)
    return name, url


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")


def copy_plain(url: str, items: list[tuple[str, Reading]], batch: int) -> None:
    sql = READINGS.copy_sql(direct=True).encode()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for start in range(0, len(items), batch):
            with cur.copy(sql) as copy:
                copy.set_types(list(READINGS.types))
                for _kind, r in items[start : start + batch]:
                    copy.write_row(reading_row(r))
            conn.commit()


def executemany(url: str, items: list[tuple[str, Reading]], batch: int) -> None:
    cols = ", ".join(READINGS.columns)
    marks = ", ".join(["%s"] * len(READINGS.columns))
    sql = (
        f"INSERT INTO readings ({cols}) VALUES ({marks}) "
        "ON CONFLICT (tenant, device, metric, ts) DO NOTHING"
    )
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for start in range(0, len(items), batch):
            cur.executemany(
                sql.encode(), [reading_row(r) for _k, r in items[start : start + batch]]
            )
            conn.commit()


def sink_writer(url: str, batch: int, direct: bool) -> Callable[[list[Any]], None]:
    config = TimescaleSinkConfig(
        database_url=url,
        batch_rows=batch,
        direct_copy=direct,
        apply_migrations_on_start=False,
        retention_days=dict.fromkeys(["readings"]),  # no retention run inside the timing
    )
    part = TimescaleSink(config).sync_writer("bench")
    return part.write_batch


def timed(run: Callable[[], None], prepare: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        prepare()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every path, print rows/s, write the JSON report; returns the report."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_timescale")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50_000, help="rows per transaction")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--executemany-rows", type=int, default=50_000)
    parser.add_argument("--database-url", default=Settings().database_url)
    args = parser.parse_args(argv)

    items = make_readings(args.rows)
    name, url = create_database(args.database_url)
    n, batch = args.rows, args.batch
    results: dict[str, float] = {}
    try:
        direct = sink_writer(url, batch, direct=True)
        staging = sink_writer(url, batch, direct=False)

        def feed(write: Callable[[list[Any]], None]) -> Callable[[], None]:
            def run() -> None:
                for start in range(0, n, batch):
                    write(items[start : start + batch])

            return run

        def clean() -> None:
            truncate(url)

        def refill() -> None:
            truncate(url)
            feed(direct)()

        plans: list[tuple[str, Callable[[], None], Callable[[], None], int]] = [
            ("copy_plain", lambda: copy_plain(url, items, batch), clean, n),
            ("sink_direct", feed(direct), clean, n),
            ("sink_staging", feed(staging), clean, n),
            ("sink_replay", feed(direct), refill, n),
        ]
        few = items[: args.executemany_rows]
        plans.append(("executemany", lambda: executemany(url, few, batch), clean, len(few)))
        for label, run, prepare, rows in plans:
            seconds = timed(run, prepare, args.repeat)
            results[label] = rows / seconds
            expected = rows
            assert count(url) == expected, f"{label}: {count(url)} rows, expected {expected}"
            print(f"{label:<14} {rows / seconds:>12,.0f} rows/s   ({rows} rows in {seconds:.2f} s)")
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    report = {
        "benchmark": "timescale",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0],
        },
        "rows": n,
        "batch_rows": batch,
        "repeat": args.repeat,
        "series": 1000,
        "rows_per_second": {k: round(v) for k, v in results.items()},
        "notes": "best of `repeat`; server and client share the machine's cores; "
        "TimescaleDB 2.19 Apache edition, readings hypertable with its unique key index",
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {REPORT}")
    return report


if __name__ == "__main__":
    main()
