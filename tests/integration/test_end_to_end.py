"""Kafka and TimescaleDB end to end: raw topic -> flows.ingest -> output topics + tables.

The same 20,000 readings of a simulated plant (10 devices x 17 metrics:
telemetry, state events, a device alarm bit and log lines; replayed event
time starting an hour ago, 5 s apart per series) go through the real flow
four ways, each with a raw topic, output topics and a database of its own:

1. a clean run (in process, the raw topic preloaded, ``stop_at_end``): the
   reference. Its tables and topics are checked against what the flow
   emitted, against the input, against rollups recomputed in SQL and
   against the alarms an independent consumer (kcat) reads;
2. the same input replayed into the same database: no row added or changed;
3. ``python -m bytewax.run flows.ingest`` with recovery, fed live, killed
   with SIGKILL mid-stream and restarted: the tables equal the reference
   row by row;
4. the same with the database stopped for 30 s mid-stream
   (``deploy/services.sh stop timescale``; it is always started again).

Test 4 stops the shared TimescaleDB for everyone using it meanwhile.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bytewax.testing import TestingSink, run_main

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.sink_config import TopicSpec
from connectors.runtime.registry import build_sink
from flows.config import PipelineConfig
from flows.ingest import build_flow
from schemas.models import is_number
from schemas.settings import Settings
from tests.integration.e2e_tools import (
    TABLES,
    TIERS,
    FlowProcess,
    PacedProducer,
    create_database,
    drop_database,
    output_topics,
    pipeline_config,
    plant_readings,
    replay_start,
    rollup_reference,
    rows_differ,
    services,
    stored_rollups,
    table_counts,
    table_rows,
    topic_counts,
    unique,
    wait_until,
)
from tests.ports import free_port
from tests.support.kafka_tools import consume_all, delete_topics, kcat_read, produce_raw

pytestmark = [pytest.mark.kafka, pytest.mark.timescale]

N_READINGS = 20_000
OUTAGE_S = 30.0
FLOAT_TOL = 1e-9

Output = tuple[str, Any]


@dataclass
class Run:
    """A pipeline's raw topic, output topics and database."""

    raw_topic: str
    prefix: str
    url: str

    def topics(self) -> dict[str, str]:
        return output_topics(self.prefix)


@dataclass
class Reference:
    """The clean run: its resources, what the flow emitted, and the rows it should leave."""

    run: Run
    outputs: list[Output]
    expected_rows: dict[str, int]


def natural_key(kind: str, record: Any) -> tuple[Any, ...]:
    """The key the tables de-duplicate a record by (see connectors/timescale/rows.py)."""
    if kind == "alarm":
        return (record.id, record.seq)
    if kind == "rollup":
        return (record.tenant, record.device, record.metric, record.tier, record.window_start)
    if kind == "log":
        return (
            record.tenant, record.device, record.ts, record.metric, record.level,
            record.component, record.message,
        )  # fmt: skip
    if kind == "dead_letter":
        return (record.received_at, record.reason, record.payload)
    return (record.tenant, record.device, record.metric, record.ts)


def expected_rows(outputs: list[Output]) -> dict[str, int]:
    """Rows each table must hold after storing ``outputs`` once or many times."""
    keys: dict[str, set[tuple[Any, ...]]] = {}
    for kind, record in outputs:
        keys.setdefault(kind, set()).add(natural_key(kind, record))
    alarm_ids = {record.id for kind, record in outputs if kind == "alarm"}
    return {
        "readings": len(keys.get("telemetry", ())),
        "anomaly_scores": len(keys.get("anomaly_score", ())),
        "rollups": len(keys.get("rollup", ())),
        "events": len(keys.get("event", ())),
        "alarm_transitions": len(keys.get("alarm", ())),
        "alarms": len(alarm_ids),
        "logs": len(keys.get("log", ())),
        "dead_letters": len(keys.get("dead_letter", ())),
    }


def new_run(settings: Settings, admin_url: str) -> Run:
    raw_topic = unique("sf-e2e-raw")
    ensure_topics(admin_client(settings.kafka_bootstrap_servers), [TopicSpec(raw_topic, 3)])
    return Run(raw_topic, unique("sf-e2e") + ".", create_database(admin_url))


def cleanup(run: Run, settings: Settings, admin_url: str) -> None:
    delete_topics(settings.kafka_bootstrap_servers, [run.raw_topic, *run.topics().values()])
    drop_database(admin_url, run.url)


@pytest.fixture(scope="module")
def readings() -> list[dict[str, Any]]:
    return plant_readings(N_READINGS, replay_start())


@pytest.fixture(scope="module")
def runs(settings: Settings, database_url: str, kafka_bootstrap: str) -> Iterator[list[Run]]:
    """Every Run made by this module's tests, cleaned up at the end."""
    made: list[Run] = []
    yield made
    for run in made:
        cleanup(run, settings, database_url)


@pytest.fixture(scope="module")
def reference(
    readings: list[dict[str, Any]], runs: list[Run], settings: Settings, database_url: str
) -> Reference:
    """The clean run, in process: Kafka and TimescaleDB sinks plus a TestingSink."""
    run = new_run(settings, database_url)
    runs.append(run)
    assert produce_raw(readings, run.raw_topic, settings) == N_READINGS
    config = PipelineConfig.model_validate(
        pipeline_config(run.raw_topic, run.url, run.prefix, stop_at_end=True)
    )
    outputs: list[Output] = []
    sinks = [build_sink(s, settings) for s in config.sinks] + [TestingSink(outputs)]
    run_main(build_flow(config, settings, sinks=sinks))
    return Reference(run, outputs, expected_rows(outputs))


def compare_with_reference(url: str, ref: Reference) -> None:
    """Every table equals the reference run's, row by row (rollups: final values)."""
    for table in TABLES:
        exclude: tuple[str, ...] = ()
        tol = 0.0
        if table == "rollups":
            # A flow that paused (crash, outage) may emit a window early at
            # its idle timeout and correct it later: same final values, a
            # higher revision, and coarse windows merged in another order.
            exclude, tol = ("revision",), FLOAT_TOL
        got = table_rows(url, table, exclude)
        want = table_rows(ref.run.url, table, exclude)
        assert not rows_differ(got, want, tol), (table, rows_differ(got, want, tol))


def rollups_final(url: str, ref: Reference) -> bool:
    got = table_rows(url, "rollups", ("revision",))
    return not rows_differ(got, table_rows(ref.run.url, "rollups", ("revision",)), FLOAT_TOL)


def wait_for_reference_rows(flow: FlowProcess, url: str, ref: Reference, timeout: float) -> float:
    def done() -> bool:
        if not flow.alive():
            raise AssertionError(f"the flow exited:\n{flow.log_tail()}")
        return table_counts(url) == ref.expected_rows and rollups_final(url, ref)

    try:
        return wait_until(done, timeout, "the flow to store every row", interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(
            f"{exc}: {table_counts(url)} against {ref.expected_rows}\n{flow.log_tail()}"
        ) from None


def kafka_keys(bootstrap: str, topic: str) -> tuple[int, set[tuple[Any, ...]]]:
    """(messages, distinct natural keys) of a telemetry-like topic."""
    messages = consume_all(bootstrap, topic, timeout=60)
    keys = set()
    for message in messages:
        r = json.loads(message.value())
        keys.add((r["tenant"], r["device"], r["metric"], r["ts"]))
    return len(messages), keys


def alarm_rows(url: str) -> set[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT alarm_id, seq, rule, transition, state, severity, ts FROM alarm_transitions"
        ).fetchall()
    return {tuple(r) for r in rows}


def kcat_alarms(bootstrap: str, topic: str, expected: int) -> list[tuple[Any, ...]]:
    """Alarm transitions as kcat (no consumer group, our code not involved) reads them."""
    envelopes = kcat_read(bootstrap, topic, expected=expected, timeout=30)
    out = []
    for envelope in envelopes:
        a = json.loads(envelope["payload"])
        ts = datetime.fromisoformat(a["ts"])
        out.append((a["id"], a["seq"], a["rule"], a["transition"], a["state"], a["severity"], ts))
    return out


# ---------------------------------------------------------------- 1. clean run


def test_clean_run_stores_and_publishes_every_output_exactly_once(
    reference: Reference, readings: list[dict[str, Any]], kafka_bootstrap: str
) -> None:
    run, outputs = reference.run, reference.outputs
    emitted = Counter(kind for kind, _ in outputs)

    # The input decides the telemetry count on its own: numeric values of
    # series no classification rule claims (log.*, alarm.*, state.*).
    numeric = sum(
        1
        for r in readings
        if is_number(r["value"]) and not re.match(r"(log|alarm|state)\.", r["metric"])
    )
    assert emitted["telemetry"] == numeric
    # Every good numeric value carries its anomaly score on its own record;
    # no separate score records by default (anomaly.emit_scores).
    telemetry = [record for kind, record in outputs if kind == "telemetry"]
    scored = [r for r in telemetry if r.quality != "bad"]
    assert scored and all(r.score is not None and 0.0 <= r.score <= 1.0 for r in scored)
    assert all(r.score is None for r in telemetry if r.quality == "bad")
    assert emitted["anomaly_score"] == 0
    # Every kind of output is exercised, and nothing was a dead letter.
    assert all(emitted[k] > 0 for k in ("event", "log", "rollup", "alarm")), emitted
    assert emitted["dead_letter"] == 0
    rules = {record.rule for kind, record in outputs if kind == "alarm"}
    assert {"high_temperature", "device", "anomaly"} <= rules

    # Tables: exactly one row per natural key, nothing else.
    counts = table_counts(run.url)
    assert counts == reference.expected_rows
    assert counts["readings"] == numeric
    with psycopg.connect(run.url) as conn:
        row = conn.execute("SELECT count(score), sum(score) FROM readings").fetchone()
    assert row is not None and row[0] == len(scored)
    assert row[1] == pytest.approx(sum(r.score for r in scored), rel=1e-9)

    # Topics: exactly one message per output (a clean run duplicates nothing).
    topics = run.topics()
    per_topic = topic_counts(kafka_bootstrap, list(topics.values()))
    assert {kind: per_topic[topic] for kind, topic in topics.items()} == {
        kind: emitted[kind] for kind in topics
    }

    # Rollups equal the same aggregates recomputed from the stored readings.
    for tier in TIERS:
        want = rollup_reference(run.url, tier)
        got = stored_rollups(run.url, tier)
        assert got.keys() == want.keys(), tier
        for key, (count, low, high, total) in want.items():
            n, mn, mx, s, mean = got[key]
            assert (n, mn, mx) == (count, low, high), (tier, key)
            assert s == pytest.approx(total, rel=FLOAT_TOL, abs=FLOAT_TOL), (tier, key)
            assert mean == pytest.approx(total / count, rel=FLOAT_TOL, abs=FLOAT_TOL)

    # Alarm transitions as an independent consumer reads them = the table.
    table = alarm_rows(run.url)
    from_kafka = kcat_alarms(kafka_bootstrap, topics["alarm"], expected=len(table))
    assert len(from_kafka) == len(table) == emitted["alarm"]
    assert set(from_kafka) == table
    # And the alarms table holds each alarm's latest transition.
    with psycopg.connect(run.url) as conn:
        latest = conn.execute(
            "SELECT a.id FROM alarms a JOIN (SELECT alarm_id, max(seq) AS seq "
            "FROM alarm_transitions GROUP BY alarm_id) t ON t.alarm_id = a.id AND t.seq = a.seq"
        ).fetchall()
    assert len(latest) == counts["alarms"]


# ---------------------------------------------------------------- 2. replay


def test_replaying_the_same_input_adds_and_changes_no_row(
    reference: Reference, settings: Settings
) -> None:
    run = reference.run
    before = {table: table_rows(run.url, table) for table in TABLES}
    config = PipelineConfig.model_validate(
        pipeline_config(run.raw_topic, run.url, None, stop_at_end=True)
    )
    replayed: list[Output] = []
    sinks = [build_sink(config.sinks[0], settings), TestingSink(replayed)]
    run_main(build_flow(config, settings, sinks=sinks))

    # The replay really went through the flow again, output for output ...
    assert Counter(k for k, _ in replayed) == Counter(k for k, _ in reference.outputs)
    # ... and the database is exactly as it was.
    for table in TABLES:
        assert table_rows(run.url, table) == before[table], table


def test_two_processes_store_and_publish_what_one_does(
    reference: Reference,
    readings: list[dict[str, Any]],
    runs: list[Run],
    settings: Settings,
    database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """Each process writes its own buckets' outputs (connectors.runtime.routing): exactly once."""
    run = new_run(settings, database_url)
    runs.append(run)
    assert produce_raw(readings, run.raw_topic, settings) == N_READINGS
    config = pipeline_config(run.raw_topic, run.url, run.prefix, stop_at_end=True)
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    flows = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        args = ["-i", str(i), "-a", addresses]
        flows.append(FlowProcess(config, tmp_path / str(i), recovery=False, extra_args=args))
    for flow in flows:
        flow.start()
    try:
        for flow in flows:
            assert flow.wait(timeout=180) == 0, flow.log_tail()
    finally:
        for flow in flows:
            flow.stop()

    compare_with_reference(run.url, reference)
    messages, keys = kafka_keys(kafka_bootstrap, run.topics()["telemetry"])
    assert messages == len(keys) == reference.expected_rows["readings"]
    # Both processes wrote: each connected its own TimescaleDB writer.
    for flow in flows:
        assert "timescale sink connected" in flow.log_path.read_text()


# ---------------------------------------------------------------- 3. crash


def test_flow_killed_mid_stream_resumes_without_loss_or_duplicates(
    reference: Reference,
    readings: list[dict[str, Any]],
    runs: list[Run],
    settings: Settings,
    database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    run = new_run(settings, database_url)
    runs.append(run)
    flow = FlowProcess(
        pipeline_config(run.raw_topic, run.url, run.prefix, stop_at_end=False), tmp_path
    )
    producer = PacedProducer(kafka_bootstrap, run.raw_topic, readings, rate=3000)
    flow.start()
    try:
        # Ready once its sink has created the tables; then the plant goes live.
        wait_until(lambda: "readings" in tables_of(run.url), 60, "the flow to start")
        producer.start()
        third = reference.expected_rows["readings"] // 3
        wait_until(lambda: table_counts(run.url)["readings"] >= third, 60, "a third of the rows")
        flow.kill()
        at_kill = table_counts(run.url)["readings"]
        produced_at_kill = producer.produced
        assert produced_at_kill < N_READINGS, "the input ended before the kill"
        assert at_kill < reference.expected_rows["readings"]

        flow.start()
        waited = wait_for_reference_rows(flow, run.url, reference, timeout=120)
        assert producer.finished.wait(30) and producer.error is None
        print(f"killed at {at_kill} rows ({produced_at_kill} produced); complete {waited:.1f}s")
        # The flow is killed again below; let the producer deliver what it still
        # holds first (a delivery can be in flight when the last row lands).
        topics = run.topics()
        wait_until(
            lambda: (
                len(kafka_keys(kafka_bootstrap, topics["telemetry"])[1])
                >= reference.expected_rows["readings"]
                and topic_counts(kafka_bootstrap, [topics["alarm"]])[topics["alarm"]]
                >= len(alarm_rows(run.url))
            ),
            60,
            "Kafka to acknowledge every record",
            interval=1.0,
        )
    finally:
        flow.stop()

    # The restart resumed from the recovery store, not from the beginning.
    resumed = [
        json.loads(line)
        for line in (tmp_path / "flow-2.log").read_text().splitlines()
        if "kafka partition assigned" in line
    ]
    # (the raw topic's partitions; the operator actions topic is followed too)
    raw = [r for r in resumed if r["source"] == "kafka"]
    assert raw and all(r["resume_offset"] is not None for r in raw)

    compare_with_reference(run.url, reference)

    # Kafka is at least once: whatever followed the last snapshot before the
    # kill was sent again, but every output is there.
    messages, keys = kafka_keys(kafka_bootstrap, topics["telemetry"])
    assert len(keys) == reference.expected_rows["readings"] <= messages
    table = alarm_rows(run.url)
    from_kafka = kcat_alarms(kafka_bootstrap, topics["alarm"], expected=len(table))
    assert set(from_kafka) == table


def tables_of(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


# ---------------------------------------------------------------- 4. database outage


def test_database_outage_mid_stream_loses_and_doubles_nothing(
    reference: Reference,
    readings: list[dict[str, Any]],
    runs: list[Run],
    settings: Settings,
    database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    run = new_run(settings, database_url)
    runs.append(run)
    flow = FlowProcess(
        pipeline_config(run.raw_topic, run.url, run.prefix, stop_at_end=False),
        tmp_path,
        recovery=False,
    )
    # 20 s of input: the outage starts early and the plant keeps sending.
    producer = PacedProducer(kafka_bootstrap, run.raw_topic, readings, rate=1000)
    flow.start()
    try:
        wait_until(lambda: "readings" in tables_of(run.url), 60, "the flow to start")
        producer.start()
        wait_until(lambda: table_counts(run.url)["readings"] >= 1500, 60, "the first rows")
        before = table_counts(run.url)["readings"]
        services("stop")
        try:
            down = time.monotonic()
            while time.monotonic() - down < OUTAGE_S:
                assert flow.alive(), f"the flow died during the outage:\n{flow.log_tail()}"
                time.sleep(1.0)
            produced_during = producer.produced
        finally:
            services("start")
        assert before < reference.expected_rows["readings"]
        waited = wait_for_reference_rows(flow, run.url, reference, timeout=120)
        assert producer.finished.wait(30) and producer.error is None
        print(
            f"outage at {before} rows; {produced_during} produced by its end; "
            f"complete {waited:.1f}s after the database was back"
        )
        # The flow is killed below, and a kill loses what the producer still
        # holds (at-least-once: a restart with recovery would resend it). The
        # Kafka sink gets each batch before the database does, but a delivery
        # can still be in flight when the last row lands: wait for the topics.
        emitted = Counter(kind for kind, _ in reference.outputs)
        topics = run.topics()
        exact = ("telemetry", "anomaly_score", "event", "alarm", "log", "dead_letter")

        def kafka_has_everything() -> bool:
            counts = topic_counts(kafka_bootstrap, [topics[kind] for kind in exact])
            return all(counts[topics[kind]] >= emitted[kind] for kind in exact)

        wait_until(kafka_has_everything, 60, "Kafka to acknowledge every record")
    finally:
        flow.stop()

    log = (tmp_path / "flow-1.log").read_text()
    assert "database write failed; retrying" in log  # the outage was seen ...
    assert "database writes resumed" in log  # ... and ridden out
    compare_with_reference(run.url, reference)

    # No crash, so Kafka got every output exactly once (rollups aside: the
    # pause can add early windows and corrections, see compare_with_reference).
    per_topic = topic_counts(kafka_bootstrap, list(topics.values()))
    for kind in exact:
        assert per_topic[topics[kind]] == emitted[kind], kind
    assert per_topic[topics["rollup"]] >= emitted["rollup"]
    print(f"rollup messages {per_topic[topics['rollup']]} (clean run: {emitted['rollup']})")
