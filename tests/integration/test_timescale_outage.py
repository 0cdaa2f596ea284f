"""The database goes away while the TimescaleDB sink writes: nothing lost, nothing doubled.

This test really stops the local TimescaleDB (``deploy/services.sh stop
timescale``) for about 6 seconds and starts it again, so anything else
using the server meanwhile sees the outage too. It works in a database of
its own, dropped at the end.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.timescale.config import TimescaleSinkConfig
from connectors.timescale.migrate import migrate
from connectors.timescale.sink import PENDING, RETRIES, TimescaleSink
from schemas.models import Reading

pytestmark = pytest.mark.timescale

SERVICES = Path(__file__).resolve().parents[2] / "deploy" / "services.sh"
BATCH = 1000
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def services(action: str) -> None:
    subprocess.run(
        ["bash", str(SERVICES), action, "timescale"], check=True, capture_output=True, timeout=120
    )


@pytest.fixture()
def outage_db(database_url: str) -> Iterator[str]:
    name = f"streamforge_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        for attempt in range(40):
            try:
                conn.execute(f"CREATE DATABASE {name}")
                break
            except psycopg.errors.ObjectInUse:
                # TimescaleDB's scheduler visits template1 now and then.
                if attempt == 39:
                    raise
                time.sleep(0.25)
    url = psycopg.conninfo.make_conninfo(database_url, dbname=name)
    migrate(url)
    yield url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def batch(number: int) -> list[tuple[str, Reading]]:
    start = T0 + timedelta(seconds=number)
    return [
        ("telemetry", Reading(f"dev-{j % 10}", "flow", start + timedelta(microseconds=j), j * 0.5))
        for j in range(BATCH)
    ]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class BatchWriter(threading.Thread):
    """Writes batch after batch through a sink partition; ``done`` lists the acknowledged ones."""

    def __init__(self, part: Any, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.part, self.pause = part, pause
        self.done: list[int] = []
        self.errors: list[BaseException] = []
        self.halt = threading.Event()

    def run(self) -> None:
        number = 0
        try:
            while not self.halt.is_set():
                self.part.write_batch(batch(number))  # blocks while the database is down
                self.done.append(number)
                number += 1
                time.sleep(self.pause)
        except BaseException as exc:
            self.errors.append(exc)

    def wait_for_more(self, more: int, what: str) -> None:
        target = len(self.done) + more
        wait_for(lambda: len(self.done) >= target, 60, what)

    def finish(self) -> None:
        self.halt.set()
        self.join(timeout=60)
        self.part.close()


def test_writes_block_during_an_outage_and_all_rows_arrive_once(outage_db: str) -> None:
    config = TimescaleSinkConfig(database_url=outage_db, retry_initial=0.2, retry_max=1.0)
    writer = BatchWriter(TimescaleSink(config).sync_writer("outage_test"), pause=0.02)
    done, errors = writer.done, writer.errors
    writer.start()
    wait_for(lambda: len(done) >= 3, 30, "the first batches")
    retries = RETRIES.total()
    services("stop")
    try:
        down_since = len(done)
        time.sleep(6)
        # Nothing completes while the database is down: write_batch is blocked
        # on the batch it holds (the backpressure), retrying.
        assert len(done) == down_since
        assert RETRIES.total() - retries >= 3
        assert PENDING.value(worker="0") == BATCH
        assert writer.is_alive() and errors == []
    finally:
        services("start")
    wait_for(lambda: len(done) >= down_since + 3, 60, "writes to resume")
    writer.finish()
    assert errors == []
    assert PENDING.value(worker="0") == 0
    with psycopg.connect(outage_db) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT (device, ts)) FROM readings").fetchone()
    # Every batch that write_batch acknowledged is there, once.
    assert row == (len(done) * BATCH, len(done) * BATCH)


def test_a_database_crash_loses_no_acknowledged_row(outage_db: str) -> None:
    """SIGKILL to PostgreSQL mid-stream: every batch the sink acknowledged survives, once.

    ``deploy/services.sh kill timescale`` kills the postmaster and all its
    backends at once, so WAL not yet flushed is gone; only synchronously
    committed transactions survive. Then the server restarts (crash recovery)
    and the writer, retrying, finishes the batch it held.
    """
    # The sink must not rely on the server's default: this database's is off.
    with psycopg.connect(outage_db, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
    config = TimescaleSinkConfig(database_url=outage_db, retry_initial=0.2, retry_max=1.0)
    writer = BatchWriter(TimescaleSink(config).sync_writer("crash_test"))
    done, errors = writer.done, writer.errors
    writer.start()
    try:
        for _crash in range(5):
            writer.wait_for_more(5, "batches before the crash")
            services("kill")  # in the middle of the stream: no pause before it
            services("start")
    finally:
        services("start")  # (a no-op when it is running)
    writer.wait_for_more(3, "writes to resume")
    writer.finish()
    assert errors == []
    with psycopg.connect(outage_db) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT (device, ts)) FROM readings").fetchone()
    # Every acknowledged batch survived the crashes, once; a batch in flight at
    # a crash was retried and is there once too (at most one more per crash).
    assert row is not None and row[0] == row[1]
    assert len(done) * BATCH <= row[0] <= (len(done) + 1) * BATCH
