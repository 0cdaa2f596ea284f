"""How fast records go to Kafka and raw readings come back. Prints a table and writes JSON.

    .venv/bin/python -m tests.bench.bench_kafka                  # 200k records, 1M readings
    .venv/bin/python -m tests.bench.bench_kafka --records 50000 --readings 200000 --repeat 1

Writes ``tests/bench/reports/kafka.json``. Topics are unique to the run
(``sf-bench-<random>``) and deleted at the end. Best of ``--repeat`` runs.

Sink, records/s (telemetry readings, 1,000 series, through a Bytewax
``run_main`` flow fed by ``TestingSource`` batches of ``--batch``; the time
includes the final flush, i.e. until Kafka acknowledged everything):

- ``serialise_only``: ``to_json`` + key of every record, no Kafka: the ceiling.
- ``snapshot_flush``: :class:`connectors.kafka.sink.KafkaOutputSink`
  (FixedPartitionedSink, flush in ``snapshot()`` at epoch ends).
- ``batch_flush``: :class:`connectors.kafka.sink.KafkaBatchFlushSink`
  (DynamicSink, flush at the end of every ``write_batch``).
- the two sinks again with small batches (``--small-batch``), as a lightly
  loaded flow hands them.

Source, readings/s: ``--readings`` small JSON readings preloaded (one per
message, 3 partitions) and read by :class:`connectors.kafka.source.KafkaRawSource`
with ``stop_at_end`` through Bytewax, into a counting sink (``source_only``)
and through the decode step as well (``source_decode``).
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

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.producer import message_key
from connectors.kafka.sink import KafkaBatchFlushSink, KafkaOutputSink
from connectors.kafka.sink_config import KafkaSinkConfig, TopicSpec
from connectors.kafka.source import KafkaRawSource
from connectors.kafka.source_config import KafkaSourceConfig
from flows.kernels.decoder import Decoder
from schemas.config import DecodeConfig
from schemas.kinds import ALL_OUTPUT_KINDS
from schemas.models import Reading, to_json
from schemas.settings import Settings
from tests.support.kafka_tools import consume_all, delete_topics, produce_raw

REPORT = Path(__file__).with_name("reports") / "kafka.json"


def make_records(n: int, devices: int = 200, metrics: int = 5) -> list[tuple[str, Reading]]:
    series = devices * metrics
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=n // series + 60)
    return [
        (
            "telemetry",
            Reading(
                f"device-{(i % series) // metrics:04d}",
                f"metric-{i % metrics}",
                start + timedelta(seconds=i // series),
                20.0 + (i % 97) * 0.1,
            ),
        )
        for i in range(n)
    ]


class _Count(StatelessSinkPartition[Any]):
    def __init__(self, box: list[int]) -> None:
        self.box = box

    def write_batch(self, items: list[Any]) -> None:
        self.box[0] += len(items)


class CountSink(DynamicSink[Any]):
    """Counts what reaches it."""

    def __init__(self) -> None:
        self.box = [0]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count(self.box)


def timed(run: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def bench_sink(
    records: list[tuple[str, Reading]], batches: dict[str, int], repeat: int, settings: Settings
) -> tuple[dict[str, float], list[str]]:
    results: dict[str, float] = {}
    topics: list[str] = []

    def serialise() -> None:
        for _kind, r in records:
            to_json(r)
            message_key(r)

    results["serialise_only"] = len(records) / timed(serialise, repeat)
    kinds: dict[str, type] = {"snapshot_flush": KafkaOutputSink, "batch_flush": KafkaBatchFlushSink}
    for label, batch in batches.items():
        for name, sink_type in kinds.items():
            key = f"{name}{label}"
            runs: list[str] = []

            def run(
                sink_type: type = sink_type, batch: int = batch, runs: list[str] = runs
            ) -> None:
                config = KafkaSinkConfig(
                    topic_prefix=f"sf-bench-{uuid.uuid4().hex[:8]}.", kinds=["telemetry"]
                )
                topics.extend(config.topic_for(k) for k in ALL_OUTPUT_KINDS)
                runs.append(config.topic_for("telemetry"))
                sink = sink_type(config, settings)
                sink._shared.get("bench")  # topics created outside the timing
                flow = Dataflow("bench_kafka_sink")
                stream = op.input("in", flow, TestingSource(records, batch_size=batch))
                op.output("kafka", stream, sink)
                run_main(flow)

            results[key] = len(records) / timed(run, repeat)
            got = len(consume_all(settings.kafka_bootstrap_servers, runs[-1], timeout=60))
            assert got == len(records), f"{key}: {got} of {len(records)} messages in Kafka"
    return results, topics


def bench_source(n: int, repeat: int, settings: Settings) -> tuple[dict[str, float], str, float]:
    topic = f"sf-bench-raw-{uuid.uuid4().hex[:8]}"
    ensure_topics(admin_client(settings.kafka_bootstrap_servers), [TopicSpec(topic, 3)])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    readings = (
        {
            "device": f"device-{i % 200:04d}",
            "metric": f"metric-{i % 5}",
            "ts": (start + timedelta(seconds=i // 1000)).isoformat(),
            "value": 20.0 + (i % 97) * 0.1,
        }
        for i in range(n)
    )
    began = time.perf_counter()
    produce_raw(readings, topic, settings)
    preload = n / (time.perf_counter() - began)
    results: dict[str, float] = {}
    for label, decode in (("source_only", False), ("source_decode", True)):
        counts: list[int] = []

        def run(decode: bool = decode, counts: list[int] = counts) -> None:
            config = KafkaSourceConfig(topic=topic, stop_at_end=True, create_topic=False)
            flow = Dataflow("bench_kafka_source")
            stream = op.input("kafka", flow, KafkaRawSource(config, settings))
            if decode:
                stream = op.flat_map_batch("decode", stream, Decoder(DecodeConfig(), 64))
            sink = CountSink()
            op.output("count", stream, sink)
            run_main(flow)
            counts.append(sink.box[0])

        results[label] = n / timed(run, repeat)
        assert counts[-1] == n, f"{label}: {counts[-1]} of {n} items"
    return results, topic, preload


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sink and source benchmarks, print them, write the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_kafka")
    parser.add_argument("--records", type=int, default=200_000, help="records for the sinks")
    parser.add_argument("--readings", type=int, default=1_000_000, help="readings for the source")
    parser.add_argument("--batch", type=int, default=1000, help="items per Bytewax batch")
    parser.add_argument("--small-batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    settings = Settings()

    records = make_records(args.records)
    batches = {"": args.batch, f"_batch{args.small_batch}": args.small_batch}
    topics: list[str] = []
    try:
        sink_results, sink_topics = bench_sink(records, batches, args.repeat, settings)
        topics += sink_topics
        for label, value in sink_results.items():
            print(f"sink   {label:<26} {value:>12,.0f} records/s")
        source_results, raw_topic, preload = bench_source(args.readings, args.repeat, settings)
        topics.append(raw_topic)
        print(f"preload produce_raw               {preload:>12,.0f} readings/s")
        for label, value in source_results.items():
            print(f"source {label:<26} {value:>12,.0f} readings/s")
    finally:
        delete_topics(settings.kafka_bootstrap_servers, sorted(set(topics)))

    report = {
        "benchmark": "kafka",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0],
        },
        "repeat": args.repeat,
        "sink": {
            "records": args.records,
            "batch": args.batch,
            "small_batch": args.small_batch,
            "records_per_second": {k: round(v) for k, v in sink_results.items()},
        },
        "source": {
            "readings": args.readings,
            "partitions": 3,
            "preload_readings_per_second": round(preload),
            "readings_per_second": {k: round(v) for k, v in source_results.items()},
        },
        "notes": (
            "best of `repeat`; broker (single-node KRaft, 1 GiB heap) and client share the "
            "machine's cores; sink defaults: acks=all, idempotent, linger 10 ms, lz4; sink "
            "times include the final flush (all acknowledged)"
        ),
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
