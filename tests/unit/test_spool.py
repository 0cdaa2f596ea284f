"""The gateway's disk spool: order, crash safety, limits (connectors/runtime/spool.py)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.runtime.spool import DROPPED, Spool, SpoolBatch, SpoolConfig


def _config(path: Path, **options: object) -> SpoolConfig:
    values: dict[str, object] = {"path": str(path), "max_bytes": "1MiB", "segment_bytes": 4096}
    values.update(options)
    return SpoolConfig.model_validate(values)


def _drain(spool: Spool) -> list[bytes]:
    out: list[bytes] = []
    while True:
        batch = spool.read(max_records=7)
        if not batch.count:
            spool.commit(batch)
            return out
        out.extend(batch.records)
        spool.commit(batch)


def _records(n: int, size: int = 100, start: int = 0) -> list[bytes]:
    return [f"{i:08d}".encode().ljust(size, b".") for i in range(start, start + n)]


def test_records_come_back_in_order_across_segments_and_finished_segments_are_deleted(
    tmp_path: Path,
) -> None:
    spool = Spool(_config(tmp_path), name="order")
    records = _records(500)
    spool.append(records[:250])
    spool.append(records[250:])
    assert len(list(tmp_path.glob("*.seg"))) > 5  # 4 KiB segments
    assert spool.pending_records == 500
    assert spool.pending_bytes == sum(16 + len(r) for r in records)
    assert _drain(spool) == records
    assert spool.pending_records == 0 and spool.pending_bytes == 0
    assert spool.oldest_age() == 0.0
    assert len(list(tmp_path.glob("*.seg"))) <= 2


def test_a_reopened_spool_forwards_what_was_not_committed_and_nothing_committed(
    tmp_path: Path,
) -> None:
    records = _records(300)
    spool = Spool(_config(tmp_path), name="reopen")
    spool.append(records)
    committed = spool.read(max_records=120)
    spool.commit(committed)
    spool.read(max_records=50)  # read, not committed: a crash before Kafka confirmed it
    # no close(): as after SIGKILL
    again = Spool(_config(tmp_path), name="reopen")
    assert again.pending_records == 180
    assert _drain(again) == records[120:]
    third = Spool(_config(tmp_path), name="reopen")
    assert third.pending_records == 0 and third.read().records == []


def test_a_torn_record_at_the_end_is_cut_off_and_appends_go_on(tmp_path: Path) -> None:
    spool = Spool(_config(tmp_path), name="torn")
    spool.append(_records(3))
    last = max(tmp_path.glob("*.seg"))
    with open(last, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a header promising 64 bytes, then the crash
    again = Spool(_config(tmp_path), name="torn")
    assert again.pending_records == 3
    again.append([b"after"])
    assert _drain(again) == [*_records(3), b"after"]


def test_a_corrupt_record_inside_a_segment_ends_it_and_is_counted(tmp_path: Path) -> None:
    spool = Spool(_config(tmp_path), name="corrupt")
    spool.append(_records(60))  # two segments of 4 KiB
    spool.close()
    first = min(tmp_path.glob("*.seg"))
    data = bytearray(first.read_bytes())
    data[16 + 116 + 20] ^= 0xFF  # a payload byte of the second record
    first.write_bytes(bytes(data))
    before = DROPPED.value(spool="corrupt", reason="corrupt")
    again = Spool(_config(tmp_path), name="corrupt")
    assert DROPPED.value(spool="corrupt", reason="corrupt") == before + 1
    out = _drain(again)
    assert out[0] == _records(1)[0]
    assert _records(1, start=1)[0] not in out  # the corrupt one and the rest of its segment
    assert out[-1] == _records(1, start=59)[0]  # later segments are intact


def test_a_full_spool_blocks_appends_until_forwarding_frees_room(tmp_path: Path) -> None:
    spool = Spool(_config(tmp_path, max_bytes="64KiB", segment_bytes=4096), name="block")
    records = _records(1000)  # ~116 KB, more than the limit
    done = threading.Event()

    def write() -> None:
        spool.append(records)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.3)
    assert not done.is_set()
    assert spool.pending_bytes <= 65536
    out: list[bytes] = []
    while len(out) < len(records):
        batch = spool.read(max_records=50, wait=0.5)
        out.extend(batch.records)
        spool.commit(batch)
    writer.join(5)
    assert done.is_set()
    assert out == records
    assert DROPPED.value(spool="block", reason="full") == 0


def test_a_full_spool_drops_its_oldest_records_when_told_to_and_counts_them(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, max_bytes="64KiB", segment_bytes=4096, when_full="drop_oldest")
    spool = Spool(config, name="drop")
    records = _records(1000)
    spool.append(records)  # never blocks
    dropped = int(DROPPED.value(spool="drop", reason="full"))
    assert dropped > 0
    assert spool.pending_bytes <= 65536
    out = _drain(spool)
    assert len(out) + dropped == len(records)
    assert out == records[dropped:]  # the newest kept, in order


def test_records_older_than_max_age_are_dropped_when_read(tmp_path: Path) -> None:
    now = [1000.0]
    spool = Spool(_config(tmp_path, max_age="1m"), name="age", clock=lambda: now[0])
    spool.append([b"old"])
    now[0] += 120
    spool.append([b"new"])
    assert spool.oldest_age() == 120
    assert _drain(spool) == [b"new"]
    assert DROPPED.value(spool="age", reason="age") == 1


def test_a_record_larger_than_one_read_comes_back_whole(tmp_path: Path) -> None:
    spool = Spool(_config(tmp_path, segment_bytes="64KiB", max_bytes="1MiB"), name="big")
    big = bytes(range(256)) * 1000  # 256 KB, larger than a segment
    spool.append([b"a", big, b"b"])
    assert _drain(spool) == [b"a", big, b"b"]


def test_a_rewind_reads_again_from_the_first_uncommitted_record(tmp_path: Path) -> None:
    spool = Spool(_config(tmp_path), name="rewind")
    spool.append(_records(10))
    first = spool.read(max_records=4)
    spool.read(max_records=4)
    spool.rewind()
    assert spool.read(max_records=4).records == first.records
    assert isinstance(first, SpoolBatch)


def test_limits_are_validated_with_a_reason() -> None:
    with pytest.raises(ValidationError, match="a quarter of max_bytes"):
        SpoolConfig(max_bytes="1MiB", segment_bytes="512KiB")
    with pytest.raises(ValidationError, match="not a size"):
        SpoolConfig.model_validate({"max_bytes": "lots"})


def test_reads_smaller_than_a_segment_lose_nothing_at_their_edges(tmp_path: Path) -> None:
    """A read stops inside a segment (its byte limit, or a record cut by its chunk)."""
    spool = Spool(_config(tmp_path, segment_bytes="256KiB", max_bytes="4MiB"), name="edges")
    records = [bytes([i % 251]) * (1000 + 37 * (i % 50)) for i in range(1500)]  # ~3 MB
    spool.append(records)
    out: list[bytes] = []
    reads = 0
    while True:
        batch = spool.read(max_records=100_000, max_bytes=70_000)
        reads += 1
        if not batch.count:
            break
        out.extend(batch.records)
        spool.commit(batch)
        assert spool.pending_records == len(records) - len(out)
    assert out == records
    assert reads > 40
    assert spool.pending_bytes == 0


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30_000), min_size=20, max_size=120),
    appends=st.integers(1, 8),
    read_bytes=st.integers(1, 200_000),
    read_records=st.integers(1, 500),
    reopen_every=st.integers(0, 6),
)
# reads larger than the 64 KiB chunk and smaller than a segment: chunks cut records
@example(sizes=[20_000] * 60, appends=1, read_bytes=100_000, read_records=500, reopen_every=0)
@example(sizes=[20_000] * 60, appends=3, read_bytes=70_000, read_records=7, reopen_every=2)
def test_whatever_the_sizes_and_limits_every_record_comes_back_once_in_order(
    sizes: list[int], appends: int, read_bytes: int, read_records: int, reopen_every: int
) -> None:
    """Appends, reads with small limits, commits and reopenings (as crashes) in any mix."""
    with tempfile.TemporaryDirectory() as path:
        config = SpoolConfig(path=path, max_bytes="16MiB", segment_bytes="256KiB")
        records = [bytes([i % 256]) * size + i.to_bytes(4, "big") for i, size in enumerate(sizes)]
        spool = Spool(config, name="any")
        step = max(1, len(records) // appends)
        for start in range(0, len(records), step):
            spool.append(records[start : start + step])
        out: list[bytes] = []
        reads = 0
        while True:
            batch = spool.read(max_records=read_records, max_bytes=read_bytes)
            if not batch.count:
                break
            out.extend(batch.records)
            spool.commit(batch)
            reads += 1
            if reopen_every and reads % reopen_every == 0:
                spool = Spool(config, name="any")  # as after SIGKILL: nothing closed
        assert out == records
        assert spool.pending_records == 0 and spool.pending_bytes == 0
