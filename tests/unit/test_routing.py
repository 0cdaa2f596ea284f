"""connectors.runtime.routing against Bytewax: keyed steps and aligned sink partitions agree.

The flows run in one process with several worker threads (``cluster_main``):
Bytewax routes between threads exactly as between processes.
"""

from __future__ import annotations

import threading
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from bytewax.testing import cluster_main

from connectors.kafka.sink import KafkaOutputSink
from connectors.kafka.sink_config import KafkaSinkConfig
from connectors.runtime.routing import (
    ALIGNED_PARTITION_NAMES,
    ALIGNED_PARTITIONS,
    aligned_partition,
    worker_of,
)
from flows.kernels.series import bucket_of

KEYS = [str(i) for i in range(64)] + ["dead_letter", "tenant-\u00e9/press-1"]


class _Observed:
    """Which worker (thread) did what, shared by the flow's steps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.worker_by_thread: dict[int, int] = {}
        self.state_thread: dict[str, int] = {}
        self.sink: dict[str, list[tuple[str, int]]] = {}


class _KeysPartition(StatelessSourcePartition[str]):
    def __init__(self, seen: _Observed, worker: int) -> None:
        self.seen, self.worker, self.done = seen, worker, False

    def next_batch(self) -> list[str]:
        with self.seen.lock:
            self.seen.worker_by_thread[threading.get_ident()] = self.worker
        if self.done:
            raise StopIteration
        self.done = True
        return list(KEYS) if self.worker == 0 else []


class _Keys(DynamicSource[str]):
    """Every key once, from worker 0; records which thread is which worker."""

    def __init__(self, seen: _Observed) -> None:
        self.seen = seen

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KeysPartition:
        return _KeysPartition(self.seen, worker_index)


class _Part(StatefulSinkPartition[str, None]):
    def __init__(self, seen: _Observed, name: str) -> None:
        self.seen, self.name = seen, name

    def write_batch(self, values: list[str]) -> None:
        with self.seen.lock:
            for key in values:
                self.seen.sink.setdefault(key, []).append((self.name, threading.get_ident()))

    def snapshot(self) -> None:
        return None


class _AlignedSink(FixedPartitionedSink[str, None]):
    """Partitioned as the Kafka and TimescaleDB sinks are."""

    def __init__(self, seen: _Observed) -> None:
        self.seen = seen

    def list_parts(self) -> list[str]:
        return list(ALIGNED_PARTITION_NAMES)

    def part_fn(self, item_key: str) -> int:
        return aligned_partition(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(self.seen, for_part)


def _run(workers: int) -> _Observed:
    seen = _Observed()

    def remember(state: Any, key: str) -> tuple[Any, str]:
        with seen.lock:
            seen.state_thread[key] = threading.get_ident()
        return state, key

    flow = Dataflow("routing_test")
    keys = op.input("in", flow, _Keys(seen))
    keyed = op.key_on("key", keys, lambda k: k)
    stated = op.stateful_map("state", keyed, remember)
    op.output("out", stated, _AlignedSink(seen))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return seen


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_keys_run_where_bytewax_routes_them_and_their_sink_partition_is_there_too(
    workers: int,
) -> None:
    seen = _run(workers)
    worker = {key: seen.worker_by_thread[t] for key, t in seen.state_thread.items()}
    assert set(worker) == set(KEYS)
    # connectors.runtime.routing predicts Bytewax's placement of every key...
    assert worker == {key: worker_of(key, workers) for key in KEYS}
    assert set(worker.values()) == set(range(workers))
    # ...and every item reaches exactly one partition, its aligned one, on the same worker.
    for key in KEYS:
        [(partition, thread)] = seen.sink[key]
        assert partition == ALIGNED_PARTITION_NAMES[aligned_partition(key)]
        assert thread == seen.state_thread[key], key


def test_a_worker_count_not_dividing_the_partitions_still_delivers_each_item_once() -> None:
    assert ALIGNED_PARTITIONS % 7
    seen = _run(7)
    assert sorted(seen.sink) == sorted(KEYS)
    assert all(len(places) == 1 for places in seen.sink.values())


def test_the_kafka_sink_uses_the_aligned_partitions() -> None:
    sink = KafkaOutputSink(KafkaSinkConfig())
    assert sink.list_parts() == ALIGNED_PARTITION_NAMES == sorted(ALIGNED_PARTITION_NAMES)
    for key in KEYS:
        assert sink.part_fn(key) == aligned_partition(key)


def test_series_buckets_are_the_keys_routed() -> None:
    """The sinks' items are keyed by the series step's bucket keys."""
    assert bucket_of("default/press-1/temperature", 64) in KEYS
