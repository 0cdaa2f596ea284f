"""A bounded, crash-safe queue of records on local disk: appended in order, read back in order.

The edge gateway (:mod:`flows.gateway`) writes every record here before it
forwards it to Kafka, so collection goes on while Kafka is unreachable and a
crash loses nothing that was appended:

>>> import tempfile
>>> spool = Spool(SpoolConfig(path=tempfile.mkdtemp()), name="doc")
>>> spool.append([b"first", b"second", b"third"])
>>> batch = spool.read(max_records=2)
>>> batch.records
[b'first', b'second']
>>> spool.commit(batch)              # forwarded: gone from the spool
>>> spool.pending_records, spool.read().records
(1, [b'third'])

What was appended and not committed is read again after a restart (here, a
new ``Spool`` on the same directory, as after a crash):

>>> spool.close()
>>> again = Spool(spool.config, name="doc")
>>> again.read().records
[b'third']
>>> again.close()

**On disk.** A directory of append-only segment files (``<number>.seg``,
at most ``segment_bytes`` each) and a ``cursor`` file naming the first
record not yet forwarded. Each record is a 16-byte header (payload length,
CRC-32 of append time and payload, append time) and the payload. With
``fsync: true`` (default) :meth:`Spool.append` returns only once its
records are on disk: what a source acknowledged after that survives a
power cut. The cursor is replaced atomically (write, fsync, rename), and a
segment is deleted once every record in it is forwarded. At start the
segments are checked record by record: a torn record at the end of the
last one (a crash mid-write, never acknowledged) is cut off; a record whose
checksum fails elsewhere ends its segment's readable part: counted once
(``reason="corrupt"``) and logged with the bytes lost.

**Limits.** ``max_bytes`` bounds the bytes not yet forwarded (the disk may
hold up to one more segment of forwarded records awaiting deletion). When
an append does not fit, ``when_full`` decides:

* ``block`` (default): :meth:`Spool.append` waits until forwarding frees
  room, which blocks the gateway's sources (MQTT stops acknowledging, so the
  broker keeps the messages; pollers skip polls and count them). Nothing is
  dropped. The time spent waiting is counted.
* ``drop_oldest``: the oldest segment not yet forwarded is deleted to make
  room, and its records are counted as dropped (``reason="full"``) and
  logged. New data wins over old.

``max_age`` (default none) drops records older than that when they are
read for forwarding, counted and logged with ``reason="age"``; for data that
is worthless once stale. Metrics, labelled by spool: ``streamforge_spool_bytes``,
``streamforge_spool_records``, ``streamforge_spool_oldest_age_seconds``,
``streamforge_spool_appended_records_total``,
``streamforge_spool_dropped_records_total{reason}`` and
``streamforge_spool_blocked_seconds_total``.

One writer thread and one reader thread may use a spool at the same time.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter, gauge
from schemas.durations import parse_duration
from schemas.sizes import parse_size

log = get_logger("connectors.runtime.spool")

HEADER = struct.Struct("<IId")
"""A record's header: payload length, CRC-32 (of the time's bytes and the payload), append time."""

SPOOL_BYTES = gauge("streamforge_spool_bytes", "Bytes in the spool not yet forwarded")
SPOOL_RECORDS = gauge("streamforge_spool_records", "Records in the spool not yet forwarded")
OLDEST_AGE = gauge(
    "streamforge_spool_oldest_age_seconds", "Age of the oldest record not yet forwarded (0: none)"
)
APPENDED = counter("streamforge_spool_appended_records_total", "Records appended to the spool")
DROPPED = counter(
    "streamforge_spool_dropped_records_total",
    "Records dropped from the spool (reason: full, age, corrupt)",
)
BLOCKED = counter(
    "streamforge_spool_blocked_seconds_total",
    "Seconds appends waited for room in a full spool (when_full: block)",
)


class SpoolConfig(BaseModel):
    """Where and how much a gateway spools; see :mod:`connectors.runtime.spool`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        "streamforge-spool",
        min_length=1,
        description="directory of the spool (created if missing; one sub-directory per partition)",
    )
    max_bytes: int = Field(
        1024**3,
        ge=65536,
        description="most bytes not yet forwarded, e.g. 1GiB; then when_full applies",
    )
    max_age: float | None = Field(
        None,
        gt=0.0,
        description="records older than this (e.g. 7d) are dropped, counted, instead of forwarded; "
        "null = kept until forwarded",
    )
    when_full: Literal["block", "drop_oldest"] = Field(
        "block",
        description="block: appends wait for room (sources are held back, nothing is dropped); "
        "drop_oldest: the oldest records are dropped, counted and logged",
    )
    segment_bytes: int = Field(
        16 * 1024**2,
        ge=4096,
        description="size of one segment file: the unit of deletion and of drop_oldest",
    )
    fsync: bool = Field(
        True,
        description="append returns once its records are on disk (false: in the page cache; "
        "a power cut may lose the last seconds)",
    )

    @field_validator("max_bytes", "segment_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value)

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _segments_fit(self) -> SpoolConfig:
        if self.segment_bytes * 4 > self.max_bytes:
            raise ValueError(
                f"segment_bytes ({self.segment_bytes}) must be at most a quarter of max_bytes "
                f"({self.max_bytes}): a full spool frees room a segment at a time"
            )
        return self


@dataclass
class _Segment:
    number: int
    path: Path
    size: int = 0
    records: int = 0


@dataclass(frozen=True)
class SpoolBatch:
    """Records read from a spool, in order, and where the next read starts."""

    records: list[bytes]
    end: tuple[int, int]
    """(segment number, offset) just after the last record read."""
    count: int
    """Records consumed: ``records`` and the expired records skipped among them."""
    tail: int = 0
    """Of ``count``, the records in the segment ``end`` is in."""


class SpoolClosedError(RuntimeError):
    """The spool was closed while an append waited for room."""


class Spool:
    """One spool directory; see the module docstring. ``name`` labels its metrics and logs."""

    def __init__(
        self, config: SpoolConfig, name: str = "0", clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.name = name
        self.path = Path(config.path)
        self._clock = clock
        self._labels = {"spool": name}
        self._cond = threading.Condition()
        self._closed = False
        self._segments: deque[_Segment] = deque()
        # The first record not yet forwarded (committed) and not yet read.
        self._committed: tuple[int, int] = (0, 0)
        self._committed_records = 0  # records of the first segment before _committed
        self._read_at: tuple[int, int] = (0, 0)
        self._pending_bytes = 0
        self._pending_records = 0
        self._oldest: float | None = None
        self._reader: tuple[int, BinaryIO] | None = None
        self._writer: BinaryIO | None = None
        self._segment_limit = config.segment_bytes
        self._open()

    # -- state ---------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes (headers included) appended and not yet committed."""
        return self._pending_bytes

    @property
    def pending_records(self) -> int:
        """Records appended and not yet committed."""
        return self._pending_records

    @property
    def committed(self) -> tuple[int, int]:
        """(segment number, offset) of the first record not yet committed."""
        return self._committed

    def oldest_age(self) -> float:
        """Seconds since the oldest record not yet committed was appended (0 when empty)."""
        oldest = self._oldest
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)

    def publish_metrics(self) -> None:
        """Set the spool's gauges now (the oldest record's age grows while nothing happens)."""
        with self._cond:
            self._publish()

    def _publish(self) -> None:
        SPOOL_BYTES.set(self._pending_bytes, **self._labels)
        SPOOL_RECORDS.set(self._pending_records, **self._labels)
        OLDEST_AGE.set(self.oldest_age(), **self._labels)

    def _extra(self, step: str, **more: Any) -> dict[str, Any]:
        return {"step": step, "spool": self.name, "path": str(self.path), **more}

    # -- opening -------------------------------------------------------------

    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        numbers = sorted(int(p.stem) for p in self.path.glob("*.seg") if p.stem.isdigit())
        cursor = self._read_cursor()
        if cursor is None:
            cursor = (numbers[0], 0) if numbers else (1, 0)
        for number in numbers:
            if number < cursor[0]:
                (self.path / f"{number:020d}.seg").unlink()  # forwarded before a crash
        numbers = [n for n in numbers if n >= cursor[0]]
        if numbers and numbers[0] != cursor[0]:
            cursor = (numbers[0], 0)
        for i, number in enumerate(numbers):
            segment = _Segment(number, self.path / f"{number:020d}.seg")
            start = cursor[1] if number == cursor[0] else 0
            self._check_segment(segment, start, last=i == len(numbers) - 1)
            self._segments.append(segment)
        self._committed = self._read_at = cursor
        self._pending_bytes = sum(s.size for s in self._segments) - cursor[1]
        self._pending_records = sum(s.records for s in self._segments) - self._committed_records
        self._oldest = self._time_at(cursor)
        next_number = numbers[-1] + 1 if numbers else cursor[0]
        self._start_segment(next_number)
        if self._pending_records:
            log.info(
                "spool opened with records to forward",
                extra=self._extra("open", records=self._pending_records, bytes=self._pending_bytes),
            )
        self._publish()

    def _read_cursor(self) -> tuple[int, int] | None:
        try:
            text = (self.path / "cursor").read_text().split()
            return int(text[0]), int(text[1])
        except (OSError, ValueError, IndexError):
            return None

    def _check_segment(self, segment: _Segment, committed_offset: int, last: bool) -> None:
        """Count a segment's sound records; cut a torn end (last segment) or stop at corruption."""
        data = segment.path.read_bytes()
        offset = records = 0
        while offset + HEADER.size <= len(data):
            length, crc, _stamp = HEADER.unpack_from(data, offset)
            end = offset + HEADER.size + length
            if end > len(data) or zlib.crc32(data[offset + 8 : end]) != crc:
                break
            if offset < committed_offset:
                self._committed_records += 1
            records += 1
            offset = end
        if offset < len(data):
            lost = "a torn record (a crash mid-append)" if last else "a corrupt record"
            if not last:
                DROPPED.inc(1, reason="corrupt", **self._labels)
            log.error(
                f"spool segment ends in {lost}: bytes after it are not read",
                extra=self._extra(
                    "open", segment=segment.path.name, offset=offset, bytes_lost=len(data) - offset
                ),
            )
            with open(segment.path, "r+b") as f:
                f.truncate(offset)
                f.flush()
                os.fsync(f.fileno())
        segment.size, segment.records = offset, records

    def _time_at(self, position: tuple[int, int]) -> float | None:
        """The append time of the record at ``position``, None at the end of the spool."""
        for segment in self._segments:
            if segment.number < position[0] or position[1] >= segment.size:
                continue
            offset = position[1] if segment.number == position[0] else 0
            with open(segment.path, "rb") as f:
                f.seek(offset)
                header = f.read(HEADER.size)
            if len(header) == HEADER.size:
                return float(HEADER.unpack(header)[2])
        return None

    def _start_segment(self, number: int) -> None:
        if self._writer is not None:
            self._writer.close()
        segment = _Segment(number, self.path / f"{number:020d}.seg")
        self._writer = open(segment.path, "ab")  # noqa: SIM115 (kept open while appending)
        self._sync_directory()
        self._segments.append(segment)

    def _sync_directory(self) -> None:
        if not self.config.fsync:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- appending -----------------------------------------------------------

    def append(self, records: list[bytes]) -> None:
        """Append records in order; returns once they are on disk (``fsync``).

        May wait for room (``when_full: block``) or drop the oldest records
        (``drop_oldest``). Raises :class:`SpoolClosedError` if the spool is
        closed while it waits.
        """
        if not records:
            return
        now = self._clock()
        stamp = struct.pack("<d", now)
        limit = self.config.max_bytes
        with self._cond:
            buffer = bytearray()
            buffered = 0
            for payload in records:
                need = HEADER.size + len(payload)
                segment = self._segments[-1]
                if segment.size + len(buffer) + need > self._segment_limit and (
                    segment.size or buffer
                ):
                    self._write(buffer, buffered, now)
                    buffer, buffered = bytearray(), 0
                    self._start_segment(segment.number + 1)
                if self._pending_bytes + len(buffer) + need > limit and (
                    self._pending_bytes or buffer
                ):
                    self._write(buffer, buffered, now)
                    buffer, buffered = bytearray(), 0
                    self._make_room(need)
                buffer += HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(stamp)), now)
                buffer += payload
                buffered += 1
            self._write(buffer, buffered, now)
        APPENDED.inc(len(records), **self._labels)

    def _write(self, buffer: bytearray, count: int, now: float) -> None:
        if not count:
            return
        writer = self._writer
        assert writer is not None
        writer.write(buffer)
        writer.flush()
        if self.config.fsync:
            os.fsync(writer.fileno())
        segment = self._segments[-1]
        segment.size += len(buffer)
        segment.records += count
        self._pending_bytes += len(buffer)
        self._pending_records += count
        if self._oldest is None:
            self._oldest = now
        self._publish()
        self._cond.notify_all()

    def _make_room(self, need: int) -> None:
        limit = self.config.max_bytes
        if self.config.when_full == "drop_oldest":
            while self._pending_bytes + need > limit and len(self._segments) > 1:
                self._drop_first_segment()
            return
        started = time.monotonic()
        warned = 0.0
        while self._pending_bytes and self._pending_bytes + need > limit:
            if self._closed:
                raise SpoolClosedError(f"spool {self.name} closed while full")
            waited = time.monotonic() - started
            if waited >= warned:
                log.warning(
                    "spool full: sources wait for forwarding to free room",
                    extra=self._extra("append", pending_bytes=self._pending_bytes, max_bytes=limit),
                )
                warned = waited + 30.0
            self._cond.wait(1.0)
        BLOCKED.inc(time.monotonic() - started, **self._labels)

    def _drop_first_segment(self) -> None:
        """Delete the oldest segment to make room (``drop_oldest``); count what it lost."""
        segment = self._segments.popleft()
        lost = segment.records - self._committed_records
        forwarded = self._committed[1] if segment.number == self._committed[0] else 0
        lost_bytes = segment.size - forwarded
        segment.path.unlink(missing_ok=True)
        self._close_reader_of(segment.number)
        first = self._segments[0]
        self._committed = (first.number, 0)
        self._committed_records = 0
        if self._read_at[0] <= segment.number:
            self._read_at = self._committed
        self._pending_bytes -= lost_bytes
        self._pending_records -= lost
        self._write_cursor()
        self._oldest = self._time_at(self._committed) if self._pending_records else None
        DROPPED.inc(lost, reason="full", **self._labels)
        log.error(
            "spool full: dropped its oldest records (when_full: drop_oldest)",
            extra=self._extra("append", dropped_records=lost, dropped_bytes=lost_bytes),
        )

    # -- reading and committing ------------------------------------------------

    def read(
        self, max_records: int = 10_000, max_bytes: int = 4 * 1024**2, wait: float = 0.0
    ) -> SpoolBatch:
        """The next records after the last read (not yet committed), waiting up to ``wait`` s.

        Records older than ``max_age`` are skipped and counted as dropped.
        After :meth:`rewind` the reads start again at the first uncommitted record.
        """
        with self._cond:
            if wait > 0 and self._at_end():
                self._cond.wait(wait)
            records: list[bytes] = []
            count = size = expired = 0
            number, offset = self._read_at
            min_time = None if self.config.max_age is None else self._clock() - self.config.max_age
            tail = 0
            for segment in list(self._segments):
                if segment.number < number:
                    continue
                if segment.number > number:
                    number, offset, tail = segment.number, 0, 0
                if offset >= segment.size:
                    continue  # read to its end: on to the next segment
                data = self._read_segment(segment, offset, max_bytes)
                position = 0
                while position < len(data) and count < max_records and size < max_bytes:
                    if position + HEADER.size > len(data):
                        break  # this chunk ends inside a header: the next read has it
                    length, crc, stamp = HEADER.unpack_from(data, position)
                    start = position + HEADER.size
                    if start + length > len(data):
                        if position:
                            break  # the rest of this record comes with the next read
                        data = self._read_segment(segment, offset, HEADER.size + length)
                    payload = data[start : start + length]
                    if zlib.crc32(payload, zlib.crc32(data[position + 8 : start])) != crc:
                        # Checked at open; only a disk going bad gets here.
                        raise OSError(f"spool {self.name}: checksum failed in {segment.path.name}")
                    position = start + length
                    count += 1
                    tail += 1
                    if min_time is not None and stamp < min_time:
                        expired += 1
                        continue
                    records.append(payload)
                    size += length
                offset += position
                if offset < segment.size:
                    break  # a limit, or the end of this chunk: go on from here next time
            self._read_at = (number, offset)
        if expired:
            DROPPED.inc(expired, reason="age", **self._labels)
            log.warning(
                "spool records older than max_age dropped",
                extra=self._extra("read", dropped_records=expired),
            )
        return SpoolBatch(records, (number, offset), count, tail)

    def _at_end(self) -> bool:
        last = self._segments[-1]
        return self._read_at[0] == last.number and self._read_at[1] >= last.size

    def _read_segment(self, segment: _Segment, offset: int, want: int) -> bytes:
        if self._reader is None or self._reader[0] != segment.number:
            if self._reader is not None:
                self._reader[1].close()
            self._reader = (segment.number, open(segment.path, "rb"))  # noqa: SIM115
        f = self._reader[1]
        f.seek(offset)
        # Up to the segment's size: what was written completely (and synced).
        return f.read(min(segment.size - offset, max(want, 65536)))

    def _close_reader_of(self, number: int) -> None:
        if self._reader is not None and self._reader[0] == number:
            self._reader[1].close()
            self._reader = None

    def rewind(self) -> None:
        """Read again from the first record not yet committed (after a failed forward)."""
        with self._cond:
            self._read_at = self._committed

    def commit(self, batch: SpoolBatch) -> None:
        """Mark everything up to the end of ``batch`` as forwarded; delete finished segments."""
        with self._cond:
            end = batch.end
            if end <= self._committed:
                return  # dropped meanwhile (drop_oldest)
            freed_bytes = 0
            while len(self._segments) > 1 and self._segments[0].number < end[0]:
                segment = self._segments.popleft()
                start = self._committed[1] if segment.number == self._committed[0] else 0
                freed_bytes += segment.size - start
                self._close_reader_of(segment.number)
                segment.path.unlink(missing_ok=True)
                self._committed_records = 0
            if self._committed[0] == end[0]:
                freed_bytes += end[1] - self._committed[1]
                self._committed_records += batch.count
            else:
                freed_bytes += end[1]
                self._committed_records = batch.tail
            self._committed = end
            self._pending_bytes -= freed_bytes
            self._pending_records -= batch.count
            self._write_cursor()
            self._oldest = self._time_at(end) if self._pending_records else None
            self._publish()
            self._cond.notify_all()

    def _write_cursor(self) -> None:
        temporary = self.path / "cursor.tmp"
        with open(temporary, "w") as f:
            f.write(f"{self._committed[0]} {self._committed[1]}\n")
            f.flush()
            if self.config.fsync:
                os.fsync(f.fileno())
        os.replace(temporary, self.path / "cursor")

    def close(self) -> None:
        """Close the files; a waiting append raises :class:`SpoolClosedError`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._reader is not None:
                self._reader[1].close()
                self._reader = None
