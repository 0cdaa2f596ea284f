"""Sink partitions that live on the worker that made their records.

A keyed step (``stateful_batch``) runs the key ``k`` on worker
``siphash13(k) % worker_count``, and a ``FixedPartitionedSink`` keeps the
partition at position ``j`` of its sorted partition list on worker
``j % worker_count``. Both are Bytewax 0.21's own rules (checked against it
by ``tests/integration/test_routing.py``, which fails if an upgrade changes
them). A sink item keyed by the series bucket that made it therefore stays
on its worker, crossing no process boundary, when it goes to partition
``worker_hash(bucket) % ALIGNED_PARTITIONS`` of :data:`ALIGNED_PARTITIONS`
partitions: for every worker count dividing that number, partition and
bucket are on the same worker.

>>> bucket = "default/press-1/temperature"
>>> aligned_partition(bucket)
140
>>> [worker_of(bucket, w) for w in (2, 3, 4, 7)]          # where the keyed step ran
[0, 2, 0, 6]
>>> [aligned_partition(bucket) % w for w in (2, 3, 4, 7)]  # where its sink partition is
[0, 2, 0, 0]

Why it matters: each record crossing between processes is pickled and
unpickled, a cost paid per record, and a sink partitioned by output kind
would send all of a kind's records, from every worker, to the one worker
holding that kind's partition. With another worker count (7, 9, ...) every record
still goes to exactly one partition, so nothing changes but the speed.
"""

from __future__ import annotations

import struct
from functools import cache

ALIGNED_PARTITIONS = 240
"""Partitions of the Kafka and TimescaleDB sinks: divisible by 1-6, 8, 10, 12, 15, 16, 20,
24, 30, ... so that those worker counts keep every record on its worker."""

ALIGNED_PARTITION_NAMES: list[str] = [f"{j:03d}" for j in range(ALIGNED_PARTITIONS)]
"""The partition names; zero-padded, so their sorted order is their index order."""

_MASK = (1 << 64) - 1
_UNPACK = struct.Struct("<Q").unpack_from


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 of ``data`` (Rust's ``DefaultHasher``, which has zero keys)."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    length = len(data)
    whole = length - length % 8
    for i in range(0, whole, 8):
        (m,) = _UNPACK(data, i)
        v3 ^= m
        sip_round()
        v0 ^= m
    last = (length & 0xFF) << 56
    for i, byte in enumerate(data[whole:]):
        last |= byte << (8 * i)
    v3 ^= last
    sip_round()
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        sip_round()
    return (v0 ^ v1 ^ v2 ^ v3) & _MASK


def worker_hash(key: str) -> int:
    """The hash Bytewax routes a state key by (a Rust ``String``: its bytes, then 0xFF)."""
    return siphash13(key.encode() + b"\xff")


def worker_of(key: str, worker_count: int) -> int:
    """The worker Bytewax runs a keyed step's ``key`` on."""
    return worker_hash(key) % worker_count


@cache
def aligned_partition(key: str) -> int:
    """The sink partition (index into :data:`ALIGNED_PARTITION_NAMES`) for items keyed ``key``.

    A ``part_fn``. Cached: the keys are the series buckets plus the dead
    letters' key, a bounded set (``series_buckets`` + 1).
    """
    return worker_hash(key) % ALIGNED_PARTITIONS
