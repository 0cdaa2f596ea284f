"""The polling loop of one Modbus connection: drift-free schedule, backoff, online status.

>>> import threading
>>> from connectors.modbus.config import ModbusSourceConfig
>>> config = ModbusSourceConfig.model_validate({"devices": [{"name": "press-1", "port": 5020,
...     "groups": [{"interval": "100ms", "tags": [{"metric": "t", "address": 0}]}]}]})
>>> from connectors.modbus.buffer import PollBuffer
>>> buffer = PollBuffer(100, "press-1")
>>> poller = ConnectionPoller("press-1", config.devices, tenant="plant-a",
...                           status_metric="_status.online", emit=buffer.put)
>>> stop = threading.Event()
>>> threading.Thread(target=poller.run, args=(stop,), daemon=True).start()  # doctest: +SKIP
>>> buffer.drain()  # doctest: +SKIP
[Reading(device='press-1', metric='_status.online', ..., value=True, ...), ...]

One poll, with a stand-in for the device's connection and a fixed clock:

>>> class FakeConnection:
...     def __init__(self, device): self.answers = True
...     def read(self, unit_id, function, address, count):
...         if not self.answers:
...             raise ModbusReadError("timeout", answered=False)
...         return [215] * count
...     def close(self): pass
>>> poller = ConnectionPoller("press-1", config.devices, tenant="plant-a",
...                           status_metric="_status.online", emit=buffer.put,
...                           connect=FakeConnection, wall=lambda: 1767225600.0)
>>> group = poller.schedules[0]
>>> [(r.metric, r.value, r.ts.isoformat()) for r in poller.poll(group)]
[('_status.online', True, '2026-01-01T00:00:00+00:00'), ('t', 215, '2026-01-01T00:00:00+00:00')]
>>> [(r.metric, r.value) for r in poller.poll(group)]          # status only on a change
[('t', 215)]
>>> poller.connection.answers = False
>>> [(r.metric, r.value, r.attributes) for r in poller.poll(group)]
[('_status.online', False, {'error': 'timeout'})]

Each (device, group) polls on absolute times ``start + k * interval`` of the
monotonic clock, so the schedule never drifts; the delay between a poll's
planned and actual start is its *jitter* (kept in :class:`PollStats`). A
poll that overruns later ticks skips them (counted as missed, never run
late in a burst).

What a poll produces:

- one :class:`~schemas.models.Reading` per tag (``source="modbus"``,
  ``ts`` = wall-clock time of the poll's start, quality good, the tag's unit);
- nothing for a request that failed: no fake or repeated values. A request
  the device answered with an exception (e.g. illegal address) loses its
  tags only, logged and counted; a value that cannot be emitted (NaN,
  undecodable text) is logged and counted the same way;
- when the device did not answer (connection refused, timeout after the
  retries, gateway target silent), the rest of the poll is abandoned, the
  device is *offline* and is polled again only after an exponential backoff;
- a bool reading of ``status_metric`` (``_status.online``) with the first
  poll's outcome and on every change (false carries the error in
  ``attributes["error"]``). Classification makes it an event.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.modbus.codec import DecodeError, TagDecoder, make_decoder
from connectors.modbus.config import BIT_FUNCTIONS, ModbusDevice
from connectors.modbus.plan import ReadBlock, plan_device
from connectors.modbus.transport import ModbusConnection, ModbusReadError
from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter, gauge
from schemas.models import Reading, Value

log = get_logger("connectors.modbus.source")

REQUESTS = counter("streamforge_modbus_requests_total", "Modbus read requests sent")
REQUEST_ERRORS = counter(
    "streamforge_modbus_request_errors_total", "Modbus reads that returned no values"
)
READINGS = counter("streamforge_modbus_readings_total", "Readings produced by Modbus polls")
DECODE_ERRORS = counter(
    "streamforge_modbus_decode_errors_total", "Modbus tag values that could not be emitted"
)
SKIPPED = counter(
    "streamforge_modbus_polls_skipped_total", "Scheduled polls not run (backoff or overrun)"
)
ONLINE = gauge("streamforge_modbus_device_online", "1 when a Modbus device answers, else 0")
JITTER = gauge("streamforge_modbus_poll_jitter_seconds", "Last poll's start minus planned start")


@dataclass
class PollStats:
    """Counters and recent jitter samples of one poller (read by tests and benchmarks)."""

    polls: int = 0
    failed_polls: int = 0
    skipped_backoff: int = 0
    missed_ticks: int = 0
    readings: int = 0
    decode_errors: int = 0
    block_errors: int = 0
    jitter: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def jitter_samples(self) -> list[float]:
        """A copy of the recent jitter samples (seconds, planned -> actual poll start)."""
        with self.lock:
            return list(self.jitter)


@dataclass
class DeviceState:
    """Online status and backoff of one device."""

    device: ModbusDevice
    online: bool | None = None
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class TagSlot:
    """Where a tag's value sits in its request's response, and how to decode it."""

    metric: str
    unit: str | None
    start: int
    end: int
    decode: TagDecoder | None  # None: a coil or discrete input bit


def _slots(block: ReadBlock, default_order: str) -> list[TagSlot]:
    bits = block.function in BIT_FUNCTIONS
    return [
        TagSlot(
            p.tag.metric,
            p.tag.unit,
            p.offset,
            p.offset + p.tag.width,
            None if bits else make_decoder(p.tag, default_order),
        )
        for p in block.tags
    ]


@dataclass
class Schedule:
    """One group of one device: its requests and its grid ``start + k * interval``."""

    state: DeviceState
    group: str
    interval: float
    blocks: list[ReadBlock]
    start: float = 0.0
    k: int = 0
    slots: list[list[TagSlot]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.slots = [_slots(b, self.state.device.word_order) for b in self.blocks]

    def due(self) -> float:
        """Planned (monotonic) start of the next poll."""
        return self.start + self.k * self.interval


class _Throttle:
    """Allows one log line per key per ``period`` seconds; counts what it held back."""

    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> bool:
        if now - self._last.get(key, -math.inf) >= self.period:
            self._last[key] = now
            return True
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        return False


class ConnectionPoller:
    """Polls every device of one connection (one Bytewax partition) on its own thread.

    ``emit`` receives each poll's readings (a :meth:`connectors.modbus.buffer.PollBuffer.put`).
    ``connect`` builds the connection from the first device's settings and
    is called on the polling thread, so even a slow connect never blocks
    the dataflow.
    """

    def __init__(
        self,
        key: str,
        devices: list[ModbusDevice],
        *,
        tenant: str,
        status_metric: str,
        emit: Callable[[list[Reading]], None],
        connect: Callable[[ModbusDevice], ModbusConnection] = ModbusConnection,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.devices = devices
        self.tenant = tenant
        self.status_metric = status_metric
        self.emit = emit
        self._connect = connect
        self._monotonic = monotonic
        self._wall = wall
        self.connection: ModbusConnection | None = None
        self.stats = PollStats()
        self._throttle = _Throttle()
        self.states = {d.name: DeviceState(d) for d in devices}
        self.schedules = [
            Schedule(
                self.states[d.name],
                group.name,
                group.interval,
                [b for b in plan_device(d) if b.group == group.name],
            )
            for d in devices
            for group in d.groups
        ]

    def plan(self) -> list[ReadBlock]:
        """Every request this poller sends, per poll of each group."""
        return [block for s in self.schedules for block in s.blocks]

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set (the body of the polling thread)."""
        start = self._monotonic()
        for schedule in self.schedules:
            schedule.start, schedule.k = start, 0
        try:
            while not stop.is_set():
                schedule = min(self.schedules, key=Schedule.due)
                delay = schedule.due() - self._monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                self.run_due(schedule)
        except Exception:
            # A bug here must not pass silently: the partition sees the
            # thread has died and fails the dataflow with this error logged.
            log.exception("modbus poller crashed", extra={"device": self.key, "step": "poll"})
            raise
        finally:
            if self.connection is not None:
                self.connection.close()

    def run_due(self, schedule: Schedule) -> None:
        """Run (or skip, in backoff) the poll planned at ``schedule.due()``, then advance it."""
        planned = schedule.due()
        state = schedule.state
        now = self._monotonic()
        if now < state.retry_at:
            # Still backing off: jump to the first grid tick at or after retry_at.
            k = max(
                schedule.k + 1, math.ceil((state.retry_at - schedule.start) / schedule.interval)
            )
            skipped = k - schedule.k
            self.stats.skipped_backoff += skipped
            SKIPPED.inc(skipped, device=state.device.name, reason="backoff")
            schedule.k = k
            return
        jitter = now - planned
        with self.stats.lock:
            self.stats.jitter.append(jitter)
        JITTER.set(jitter, device=state.device.name, group=schedule.group)
        readings = self.poll(schedule)
        if readings:
            self.emit(readings)
        after = self._monotonic()
        k = schedule.k + 1
        if schedule.start + k * schedule.interval <= after:
            # The poll overran later ticks: skip them rather than run them late.
            late = math.floor((after - schedule.start) / schedule.interval) + 1
            self.stats.missed_ticks += late - k
            SKIPPED.inc(late - k, device=state.device.name, reason="overrun")
            k = late
        schedule.k = k

    def poll(self, schedule: Schedule) -> list[Reading]:
        """Read one group of one device now; its readings, with a status reading on change."""
        state = schedule.state
        device = state.device
        if self.connection is None:
            self.connection = self._connect(device)
        ts = datetime.fromtimestamp(self._wall(), UTC)
        self.stats.polls += 1
        readings: list[Reading] = []
        failure: str | None = None
        for block, slots in zip(schedule.blocks, schedule.slots, strict=True):
            REQUESTS.inc(device=device.name, function=block.function)
            try:
                values = self.connection.read(
                    block.unit_id, block.function, block.address, block.count
                )
            except ModbusReadError as exc:
                REQUEST_ERRORS.inc(device=device.name, answered=str(exc.answered).lower())
                if not exc.answered:
                    failure = exc.reason
                    break
                self.stats.block_errors += 1
                self._warn(
                    f"{device.name}/{block.function}/{block.address}",
                    "modbus request refused, its tags are skipped",
                    device.name,
                    error=exc.reason,
                    request=block.describe(),
                )
                continue
            self._decode(device.name, slots, values, ts, readings)
        self.stats.readings += len(readings)
        READINGS.inc(len(readings), device=device.name)
        status = self._update_status(state, ts, failure)
        if status is not None:
            if status.value:
                readings.insert(0, status)
            else:
                readings.append(status)
        return readings

    def _decode(
        self,
        device: str,
        slots: list[TagSlot],
        values: list[int] | list[bool],
        ts: datetime,
        out: list[Reading],
    ) -> None:
        tenant = self.tenant
        for slot in slots:
            try:
                if slot.decode is None:
                    value: Value = bool(values[slot.start])
                else:
                    value = slot.decode(values[slot.start : slot.end])
            except DecodeError as exc:
                self.stats.decode_errors += 1
                DECODE_ERRORS.inc(device=device, metric=slot.metric)
                self._warn(
                    f"{device}/{slot.metric}",
                    "modbus value not emitted",
                    device,
                    metric=slot.metric,
                    error=str(exc),
                )
                continue
            out.append(
                Reading(
                    device=device,
                    metric=slot.metric,
                    ts=ts,
                    value=value,
                    tenant=tenant,
                    quality="good",
                    source="modbus",
                    unit=slot.unit,
                )
            )

    def _update_status(
        self, state: DeviceState, ts: datetime, failure: str | None
    ) -> Reading | None:
        """Apply a poll's outcome to the device's state; a status reading when it changed."""
        device = state.device
        was = state.online
        delay = 0.0
        if failure is None:
            state.failures, state.retry_at, state.last_error = 0, 0.0, None
            state.online = True
        else:
            self.stats.failed_polls += 1
            state.failures += 1
            delay = min(device.backoff_max, device.backoff_initial * 2 ** (state.failures - 1))
            state.retry_at = self._monotonic() + delay
            state.last_error = failure
            state.online = False
        if was == state.online:
            return None
        ONLINE.set(1.0 if state.online else 0.0, device=device.name)
        context = {"device": device.name, "step": "poll", "connection": self.key}
        if state.online:
            log.info("modbus device online", extra=context)
        else:
            log.warning(
                "modbus device offline", extra={**context, "error": failure, "retry_in_s": delay}
            )
        return Reading(
            device=device.name,
            metric=self.status_metric,
            ts=ts,
            value=bool(state.online),
            tenant=self.tenant,
            quality="good",
            source="modbus",
            attributes={"error": failure} if failure else None,
        )

    def _warn(self, key: str, message: str, device: str, **fields: object) -> None:
        if self._throttle.allow(key, self._monotonic()):
            suppressed = self._throttle.suppressed.pop(key, 0)
            log.warning(
                message,
                extra={
                    "device": device,
                    "step": "poll",
                    "suppressed_since_last": suppressed,
                    **fields,
                },
            )
