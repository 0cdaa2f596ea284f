"""TimescaleDB storage against the real local server (``make up``).

Every test works in databases of its own, ``streamforge_test_<random>``,
created from template1 (which has the timescaledb extension: the Apache
edition here) or from template0 (plain PostgreSQL), and dropped at the end,
so nothing clashes with other tests or with the shared ``streamforge``
database. Tests that share the session database use a tenant of their own.
The database outage test is in ``test_timescale_outage.py``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import psycopg
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.runtime.outputs import route_by_kind
from connectors.runtime.registry import build_sink
from connectors.timescale.config import TimescaleSinkConfig
from connectors.timescale.edition import detect_edition, edition_info, hypertables
from connectors.timescale.migrate import Migration, MigrationError, load_migrations, migrate
from connectors.timescale.migrate import main as migrate_main
from connectors.timescale.retention import apply_retention, ensure_policies
from connectors.timescale.retention import main as retention_main
from connectors.timescale.sink import LOST, REJECTED, RETRIES, ROWS_UNCHANGED, TimescaleSink
from schemas.models import (
    Alarm,
    AlarmState,
    AlarmTransition,
    AnomalyScore,
    DeadLetter,
    Event,
    LogRecord,
    Reading,
    Rollup,
    Severity,
)

pytestmark = pytest.mark.timescale

TABLES = (
    "readings",
    "anomaly_scores",
    "rollups",
    "events",
    "alarm_transitions",
    "alarms",
    "logs",
    "dead_letters",
)
HYPERTABLES = {"readings", "anomaly_scores", "rollups", "events", "logs", "dead_letters"}
# Recent, so the retention job the sink runs on its first write keeps the data.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _db_url(base: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(base, dbname=name)


@pytest.fixture(scope="session")
def new_database(database_url: str) -> Iterator[Callable[[bool], str]]:
    """Factory: a new database (with TimescaleDB, or plain), dropped at the end of the session."""
    created: list[str] = []

    def create(timescale: bool = True) -> str:
        name = f"streamforge_test_{uuid.uuid4().hex[:10]}"
        template = "template1" if timescale else "template0"
        with psycopg.connect(database_url, autocommit=True) as conn:
            for attempt in range(40):
                try:
                    conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
                    break
                except psycopg.errors.ObjectInUse:
                    # TimescaleDB's scheduler visits template1 for a moment now
                    # and then (timescale/timescaledb#4048); try again.
                    if attempt == 39:
                        raise
                    time.sleep(0.25)
        created.append(name)
        return _db_url(database_url, name)

    yield create
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in created:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def ts_url(new_database: Callable[[bool], str]) -> str:
    """A migrated TimescaleDB database shared by the tests that use their own tenant."""
    url = new_database(True)
    migrate(url)
    return url


@pytest.fixture(scope="session")
def pg_url(new_database: Callable[[bool], str]) -> str:
    """A migrated plain PostgreSQL database (no timescaledb extension)."""
    url = new_database(False)
    migrate(url)
    return url


@pytest.fixture()
def fresh_schema(ts_url: str) -> Iterator[str]:
    """URL of an empty schema of its own in the TimescaleDB database (first in search_path).

    Cheaper than a database: CREATE DATABASE from template1 collides now and
    then with TimescaleDB's scheduler and then waits 5 s.
    """
    schema = f"test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ts_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield psycopg.conninfo.make_conninfo(ts_url, options=f"-c search_path={schema},public")
    with psycopg.connect(ts_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture()
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def count(url: str, table: str, tenant: str | None = None) -> int:
    with psycopg.connect(url) as conn:
        if tenant is None:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        else:
            row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE tenant = %s",
                (tenant,),
            ).fetchone()
    assert row is not None
    return int(row[0])


def counts(url: str, tenant: str) -> dict[str, int]:
    return {t: count(url, t, tenant) for t in TABLES}


def sink_partition(url: str, **options: Any) -> Any:
    config = TimescaleSinkConfig(database_url=url, retry_initial=0.05, retry_max=0.5, **options)
    return TimescaleSink(config).sync_writer("timescale_test")


def alarm(
    tenant: str, seq: int, transition: AlarmTransition, state: AlarmState, severity: Severity
) -> Alarm:
    return Alarm(
        id=f"{tenant}/press-1/temp-high/1",
        tenant=tenant,
        device="press-1",
        metric="temperature",
        rule="temp-high",
        kind="threshold",
        severity=severity,
        state=state,
        transition=transition,
        seq=seq,
        ts=T0 + timedelta(minutes=seq),
        raised_at=T0 + timedelta(minutes=1),
        value=90.0 + seq,
        threshold=80.0,
        message=f"temperature {transition}",
        cleared_at=T0 + timedelta(minutes=seq) if state == "cleared" else None,
    )


def rollup(tenant: str, revision: int, count_: int, mean: float) -> Rollup:
    return Rollup(
        tenant=tenant, device="press-1", metric="temperature", tier="1m",
        window_start=T0, window_end=T0 + timedelta(minutes=1), count=count_,
        min=1.0, max=9.0, sum=mean * count_, mean=mean, var=0.5, first=1.0, last=9.0,
        first_ts=T0, last_ts=T0 + timedelta(seconds=59), revision=revision,
    )  # fmt: skip


def every_kind(tenant: str, n_readings: int) -> list[tuple[str, Any]]:
    """n readings (mixed value types) and a few records of every other kind."""
    values: list[Any] = [1.5, 7, True, "running"]
    items: list[tuple[str, Any]] = [
        (
            "telemetry",
            Reading(
                f"dev-{i % 10}",
                "temperature",
                T0 + timedelta(seconds=i // 10),
                values[i % 4],
                tenant=tenant,
                unit="C",
                attributes={"line": "a"} if i == 0 else None,
            ),
        )
        for i in range(n_readings)
    ]
    changes = [(None, True), (True, False), (False, True)]
    items += [
        ("event", Event(tenant, "dev-1", "door", T0 + timedelta(seconds=i), prev, value))
        for i, (prev, value) in enumerate(changes)
    ]
    items += [
        ("log", LogRecord(tenant, "dev-1", T0, "warning", "plc", f"message {i}", "log"))
        for i in range(2)  # same timestamp, different messages: two rows
    ]
    items += [
        ("anomaly_score", AnomalyScore(tenant, "dev-1", "temperature", T0 + timedelta(seconds=i),
                                       20.0, 0.1 * i, "hst", i == 4))
        for i in range(5)
    ]  # fmt: skip
    items += [("rollup", rollup(tenant, 0, 10, 5.0))]
    items += [("alarm", alarm(tenant, 1, "raised", "raised", "warning"))]
    items += [
        ("dead_letter", DeadLetter(T0, "mqtt", f"bad json {i}", "{oops", origin="plant/a",
                                   tenant=tenant))
        for i in range(2)
    ]  # fmt: skip
    return items


EXPECTED_EVERY_KIND = {
    "readings": 1000,
    "anomaly_scores": 5,
    "rollups": 1,
    "events": 3,
    "alarm_transitions": 1,
    "alarms": 1,
    "logs": 2,
    "dead_letters": 2,
}


def schema_snapshot(url: str) -> list[Any]:
    with psycopg.connect(url) as conn:
        return [
            conn.execute(
                "SELECT table_name, column_name, data_type, collation_name FROM "
                "information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 2"
            ).fetchall(),
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "ORDER BY 1"
            ).fetchall(),
            conn.execute(
                "SELECT tablename, policyname, qual FROM pg_policies ORDER BY 1"
            ).fetchall(),
            conn.execute("SELECT * FROM schema_migrations ORDER BY version").fetchall(),
            sorted(hypertables(conn)),
        ]


def test_migrations_apply_once_even_concurrently_and_twice_without_change(
    fresh_schema: str,
) -> None:
    url = fresh_schema
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(url))
        except BaseException as exc:
            errors.append(exc)

    # Four processes starting together: the advisory lock lets one apply.
    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(name for names in results for name in names) == [
        m.name for m in load_migrations()
    ]
    before = schema_snapshot(url)
    assert migrate(url) == []
    assert schema_snapshot(url) == before
    assert {row[0] for row in before[0]} >= set(TABLES) | {"schema_migrations"}
    # every data table has its RLS policy (later migrations may add more tables)
    assert {row[0] for row in before[2]} >= set(TABLES)
    assert before[4] == sorted(HYPERTABLES)


def test_an_edited_applied_migration_is_refused(ts_url: str) -> None:
    edited = [
        Migration(m.version, m.name, m.sql + "\n-- edited", m.checksum + "x")
        for m in load_migrations()
    ]
    with pytest.raises(MigrationError, match="never edit an applied migration"):
        migrate(ts_url, edited)


def test_edition_is_detected(ts_url: str, pg_url: str) -> None:
    with psycopg.connect(ts_url) as conn:
        info = edition_info(conn)
        assert detect_edition(conn) == "apache"  # Debian's package
    assert info.installed_version and info.license == "apache"
    with psycopg.connect(pg_url) as conn:
        info = edition_info(conn)
        assert detect_edition(conn) == "none"
    assert info.installed_version is None
    assert info.available  # the server has it; this database does not


def test_hypertables_where_available_plain_tables_otherwise(ts_url: str, pg_url: str) -> None:
    with psycopg.connect(ts_url) as conn:
        assert hypertables(conn) == HYPERTABLES
    with psycopg.connect(pg_url) as conn:
        assert hypertables(conn) == set()
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        assert {r[0] for r in rows} >= set(TABLES)


@pytest.mark.parametrize("direct_copy", [True, False])
@pytest.mark.parametrize("database", ["timescale", "postgres"])
def test_every_kind_lands_exactly_once_and_a_replay_adds_nothing(
    database: str, direct_copy: bool, ts_url: str, pg_url: str, tenant: str
) -> None:
    url = ts_url if database == "timescale" else pg_url
    part = sink_partition(url, direct_copy=direct_copy, batch_rows=300)
    items = every_kind(tenant, 1000)
    part.write_batch(items)
    assert counts(url, tenant) == EXPECTED_EVERY_KIND
    unchanged = ROWS_UNCHANGED.value(table="readings")
    part.write_batch(items)  # a replay after a crash
    part.write_batch(items[:500])  # a partial replay
    assert counts(url, tenant) == EXPECTED_EVERY_KIND
    assert ROWS_UNCHANGED.value(table="readings") - unchanged == 1500
    part.close()
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(value), count(value_text), count(value_bool), count(attributes) "
            "FROM readings WHERE tenant = %s",
            (tenant,),
        ).fetchone()
        events = conn.execute(
            "SELECT previous, value FROM events WHERE tenant = %s ORDER BY ts", (tenant,)
        ).fetchall()
    assert row == (500, 250, 250, 1)  # float and int, str, bool; one reading had attributes
    assert events == [(None, True), (True, False), (False, True)]  # JSON keeps the types


def test_rollup_correction_replaces_and_older_revision_does_not(ts_url: str, tenant: str) -> None:
    part = sink_partition(ts_url)

    def stored() -> list[Any]:
        with psycopg.connect(ts_url) as conn:
            return conn.execute(
                "SELECT revision, count, mean FROM rollups WHERE tenant = %s", (tenant,)
            ).fetchall()

    part.write_batch([("rollup", rollup(tenant, 0, 10, 5.0))])
    assert stored() == [(0, 10, 5.0)]
    part.write_batch([("rollup", rollup(tenant, 1, 11, 6.0))])
    assert stored() == [(1, 11, 6.0)]
    part.write_batch([("rollup", rollup(tenant, 0, 10, 5.0))])  # a replay of revision 0
    assert stored() == [(1, 11, 6.0)]
    # Both revisions in one batch, the newer first: the newer still wins.
    part.write_batch(
        [("rollup", rollup(tenant, 3, 13, 7.0)), ("rollup", rollup(tenant, 2, 9, 1.0))]
    )
    assert stored() == [(3, 13, 7.0)]


def test_alarm_lifecycle_keeps_latest_state_and_every_transition(ts_url: str, tenant: str) -> None:
    part = sink_partition(ts_url)
    raised = alarm(tenant, 1, "raised", "raised", "warning")
    escalated = alarm(tenant, 2, "escalated", "raised", "critical")
    cleared = alarm(tenant, 3, "cleared", "cleared", "critical")
    part.write_batch([("alarm", raised)])
    part.write_batch([("alarm", escalated), ("alarm", cleared)])
    part.write_batch([("alarm", escalated)])  # a late replay must not reopen the alarm
    with psycopg.connect(ts_url) as conn:
        state = conn.execute(
            "SELECT seq, state, severity, transition, cleared_at FROM alarms WHERE tenant = %s",
            (tenant,),
        ).fetchall()
        history = conn.execute(
            "SELECT seq, transition FROM alarm_transitions WHERE tenant = %s ORDER BY seq",
            (tenant,),
        ).fetchall()
    assert state == [(3, "cleared", "critical", "cleared", cleared.cleared_at)]
    assert history == [(1, "raised"), (2, "escalated"), (3, "cleared")]


def test_a_record_the_database_refuses_becomes_a_dead_letter(ts_url: str, tenant: str) -> None:
    part = sink_partition(ts_url)
    good = [("telemetry", Reading("dev", "m", T0 + timedelta(seconds=i), 1.0, tenant=tenant))
            for i in range(99)]  # fmt: skip
    bad = ("telemetry", Reading("dev", "bad\x00name", T0, 1.0, tenant=tenant))
    rejected, lost = REJECTED.value(table="readings"), LOST.total()
    part.write_batch([*good[:50], bad, *good[50:]])
    part.write_batch([bad])  # a replay: the same dead letter, not a second one
    assert count(ts_url, "readings", tenant) == 99
    with psycopg.connect(ts_url) as conn:
        rows = conn.execute(
            "SELECT step, origin, reason, payload FROM dead_letters WHERE tenant = %s", (tenant,)
        ).fetchall()
    assert len(rows) == 1
    step, origin, reason, payload = rows[0]
    assert (step, origin) == ("timescale", "timescale/readings")
    assert "0x00" in reason and "bad\\u0000name" in payload
    assert REJECTED.value(table="readings") == rejected + 2
    assert LOST.total() == lost


def test_rls_policies_isolate_tenants(ts_url: str, tenant: str) -> None:
    other = tenant + "-other"
    part = sink_partition(ts_url)
    part.write_batch([("telemetry", Reading("d", "m", T0, 1.0, tenant=tenant)),
                      ("telemetry", Reading("d", "m", T0, 2.0, tenant=other))])  # fmt: skip
    with psycopg.connect(ts_url) as conn:
        # The owner bypasses RLS unless forced; force it inside a transaction
        # that is rolled back, to see what a non-owner role would see.
        conn.execute("ALTER TABLE readings FORCE ROW LEVEL SECURITY")
        conn.execute("SELECT set_config('streamforge.tenant', %s, true)", (tenant,))
        seen = conn.execute("SELECT tenant, value FROM readings").fetchall()
        conn.rollback()
        conn.execute("ALTER TABLE readings FORCE ROW LEVEL SECURITY")
        unset = conn.execute("SELECT count(*) FROM readings").fetchone()
        conn.rollback()
    assert seen == [(tenant, 1.0)]
    assert unset == (0,)


def _aged_data(url: str, tenant: str) -> None:
    now = datetime.now(UTC)
    part = sink_partition(url, retention_days=dict.fromkeys(TABLES))  # no retention run here
    items: list[tuple[str, Any]] = [
        ("telemetry", Reading("d", "m", now - timedelta(days=age), 1.0, tenant=tenant))
        for age in (100, 60, 40, 0.01)
    ]
    raised = alarm(tenant, 1, "raised", "raised", "warning")
    cleared = alarm(tenant, 2, "cleared", "cleared", "warning")
    raised.id, cleared.id = f"{tenant}-old-raised", f"{tenant}-old-cleared"
    for a in (raised, cleared):
        a.ts = a.raised_at = now - timedelta(days=100)
    items += [("alarm", raised), ("alarm", cleared)]
    part.write_batch(items)
    part.close()


def test_retention_drops_old_chunks_on_apache_edition(ts_url: str, tenant: str) -> None:
    _aged_data(ts_url, tenant)
    with psycopg.connect(ts_url) as conn:
        chunks_before = conn.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()
        actions = apply_retention(conn, {"readings": 30, "alarms": 30, "logs": None})
        chunks_after = conn.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()
        alarms = conn.execute("SELECT id FROM alarms WHERE tenant = %s", (tenant,)).fetchall()
    assert chunks_before is not None and chunks_after is not None
    by_table = {a.table: a for a in actions}
    # Readings 100, 60 and 40 days old had a chunk each; the recent one stays.
    assert (by_table["readings"].method, by_table["readings"].removed) == ("drop_chunks", 3)
    assert chunks_before[0] - chunks_after[0] == 3
    assert count(ts_url, "readings", tenant) == 1
    assert by_table["alarms"].method == "delete" and alarms == [(f"{tenant}-old-raised",)]
    assert "logs" not in by_table  # None keeps forever


def test_retention_deletes_rows_on_plain_postgres(pg_url: str, tenant: str) -> None:
    _aged_data(pg_url, tenant)
    with psycopg.connect(pg_url) as conn:
        actions = apply_retention(conn, {"readings": 30, "alarms": 30})
    assert [(a.table, a.method, a.removed) for a in actions] == [
        ("readings", "delete", 3),
        ("alarms", "delete", 1),
    ]
    assert count(pg_url, "readings", tenant) == 1
    assert count(pg_url, "alarms", tenant) == 1  # the raised alarm stays, however old


def test_through_a_bytewax_dataflow(ts_url: str, tenant: str) -> None:
    items = every_kind(tenant, 1000)
    sink = build_sink(TimescaleSinkConfig(database_url=ts_url, batch_rows=128))
    assert isinstance(sink, TimescaleSink)
    for _ in range(2):  # the second run is a replay: nothing new
        flow = Dataflow("timescale_test")
        source = TestingSource(route_by_kind(items), batch_size=100)
        op.output("db", op.input("in", flow, source), sink)
        run_main(flow)
        assert counts(ts_url, tenant) == EXPECTED_EVERY_KIND


def test_kinds_not_configured_are_not_written(ts_url: str, tenant: str) -> None:
    part = sink_partition(ts_url, kinds=["alarm"])
    part.write_batch(every_kind(tenant, 10))
    assert counts(ts_url, tenant) == {t: int(t.startswith("alarm")) for t in TABLES}


def test_unreachable_database_retries_then_gives_up_when_told(tenant: str) -> None:
    part = sink_partition(
        "postgresql://streamforge:x@127.0.0.1:1/none", give_up_after=0.6, connect_timeout=2
    )
    retries = RETRIES.total()
    with pytest.raises(RuntimeError, match="give_up_after"):
        part.write_batch([("telemetry", Reading("d", "m", T0, 1.0, tenant=tenant))])
    assert RETRIES.total() - retries >= 3  # 0.05 + 0.1 + 0.2 + 0.4 s of backoff


def test_full_edition_policies_fail_softly_on_the_apache_edition(fresh_schema: str) -> None:
    # The native policies exist only in the Timescale-licensed edition; here
    # each step fails, is reported, and leaves the connection usable.
    migrate(fresh_schema)
    with psycopg.connect(fresh_schema) as conn:
        problems = ensure_policies(conn, {"readings": 30, "rollups": None}, compress_after_days=7)
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
    assert problems and all("license" in p for p in problems)
    assert any(p.startswith("readings:") for p in problems)


def test_commands(fresh_schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert migrate_main(["--database-url", fresh_schema]) == 0
    assert migrate_main(["--database-url", fresh_schema]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "applied: " + ", ".join(m.name for m in load_migrations()),
        f"up to date ({len(load_migrations())} migrations)",
    ]
    assert retention_main(["--database-url", fresh_schema, "--days", "logs=none"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "edition: apache"
    assert any(line.split()[:2] == ["readings", "drop_chunks"] for line in out)
    assert not any(line.startswith("logs ") for line in out)
    assert migrate_main(["--database-url", "postgresql://nobody:x@127.0.0.1:1/none"]) == 1
