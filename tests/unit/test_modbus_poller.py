"""Poller logic with a scripted connection and a fake clock: schedule, backoff, status, buffer.

The protocol itself is tested against a real pymodbus server in
tests/integration/test_modbus.py; here only the decisions are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connectors.modbus.buffer import PollBuffer
from connectors.modbus.codec import encode_value
from connectors.modbus.config import ModbusDevice, ModbusSourceConfig
from connectors.modbus.poller import ConnectionPoller
from connectors.modbus.transport import ModbusReadError
from schemas.models import Reading

Reply = list[int] | list[bool] | ModbusReadError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedConnection:
    """Answers reads from ``replies`` (by function) and can advance the clock while reading."""

    def __init__(self, replies: dict[str, Reply], clock: Clock, read_time: float = 0.0) -> None:
        self.replies = replies
        self.clock = clock
        self.read_time = read_time
        self.reads: list[tuple[int, str, int, int]] = []

    def read(self, unit: int, function: str, address: int, count: int) -> list[int] | list[bool]:
        self.reads.append((unit, function, address, count))
        self.clock.now += self.read_time
        reply = self.replies[function]
        if isinstance(reply, ModbusReadError):
            raise reply
        return reply[:count]

    def close(self) -> None:
        pass


def _device(**fields: Any) -> ModbusDevice:
    config = ModbusSourceConfig.model_validate(
        {
            "devices": [
                {
                    "name": "press-1",
                    "backoff_initial": 1.0,
                    "backoff_max": 4.0,
                    "groups": [
                        {
                            "interval": 0.1,
                            "tags": [
                                {"metric": "temp", "address": 0, "type": "float32", "unit": "degC"},
                                {"metric": "count", "address": 2, "type": "uint16"},
                                {"metric": "run", "function": "coil", "address": 0},
                            ],
                        }
                    ],
                    **fields,
                }
            ]
        }
    )
    return config.devices[0]


REGISTERS = [*encode_value(21.5, "float32"), 7]


def _poller(
    replies: dict[str, Reply], read_time: float = 0.0
) -> tuple[ConnectionPoller, ScriptedConnection, Clock, list[list[Reading]]]:
    clock = Clock()
    connection = ScriptedConnection(replies, clock, read_time)
    emitted: list[list[Reading]] = []
    connect: Callable[[ModbusDevice], Any] = lambda _device: connection  # noqa: E731
    poller = ConnectionPoller(
        "press-1",
        [_device()],
        tenant="plant-a",
        status_metric="_status.online",
        emit=emitted.append,
        connect=connect,
        monotonic=clock,
        wall=lambda: 1_700_000_000.0,
    )
    return poller, connection, clock, emitted


def _values(readings: list[Reading]) -> dict[str, Any]:
    return {r.metric: r.value for r in readings}


def test_a_poll_emits_every_tag_and_the_first_status() -> None:
    poller, connection, _, emitted = _poller({"holding_register": REGISTERS, "coil": [True]})
    poller.run_due(poller.schedules[0])
    (readings,) = emitted
    assert readings[0].metric == "_status.online" and readings[0].value is True
    assert _values(readings[1:]) == {"temp": 21.5, "count": 7, "run": True}
    temp = next(r for r in readings if r.metric == "temp")
    assert (temp.tenant, temp.source, temp.quality, temp.unit) == (
        "plant-a",
        "modbus",
        "good",
        "degC",
    )
    assert temp.ts.timestamp() == 1_700_000_000.0 and temp.ts.utcoffset() is not None
    assert connection.reads == [(1, "coil", 0, 1), (1, "holding_register", 0, 3)]
    poller.run_due(poller.schedules[0])
    assert [r.metric for r in emitted[1]] == ["run", "temp", "count"]  # no second status


def test_schedule_stays_on_absolute_ticks_and_records_jitter() -> None:
    poller, _, clock, _ = _poller({"holding_register": REGISTERS, "coil": [True]})
    schedule = poller.schedules[0]
    for k in range(5):
        clock.now = k * 0.1 + 0.003  # each poll starts 3 ms late
        poller.run_due(schedule)
        assert schedule.due() == pytest.approx((k + 1) * 0.1)
    assert poller.stats.jitter_samples() == pytest.approx([0.003] * 5)
    assert poller.stats.missed_ticks == 0


def test_an_overrunning_poll_skips_ticks_instead_of_bursting() -> None:
    poller, _, clock, _ = _poller({"holding_register": REGISTERS, "coil": [True]}, read_time=0.13)
    schedule = poller.schedules[0]
    poller.run_due(schedule)  # two reads of 130 ms: ends at 0.26 s
    assert clock.now == pytest.approx(0.26)
    assert schedule.due() == pytest.approx(0.3)
    assert poller.stats.missed_ticks == 2


def test_a_silent_device_goes_offline_backs_off_and_comes_back() -> None:
    silent = ModbusReadError("timeout: no response (2 attempts)", answered=False)
    replies: dict[str, Reply] = {"holding_register": silent, "coil": silent}
    poller, connection, clock, emitted = _poller(replies)
    schedule = poller.schedules[0]

    poller.run_due(schedule)
    (offline,) = emitted[0]
    assert (offline.metric, offline.value) == ("_status.online", False)
    assert offline.attributes == {"error": "timeout: no response (2 attempts)"}
    assert len(connection.reads) == 1  # the rest of the poll is abandoned
    assert schedule.state.retry_at == pytest.approx(1.0)

    # Ticks inside the backoff are skipped without a request, straight to t=1.0.
    clock.now = 0.1
    poller.run_due(schedule)
    assert len(connection.reads) == 1
    assert schedule.due() == pytest.approx(1.0)
    assert poller.stats.skipped_backoff == 9

    clock.now = 1.0  # fails again: backoff doubles, no second offline status
    poller.run_due(schedule)
    assert schedule.state.retry_at == pytest.approx(3.0)
    assert len(emitted) == 1
    clock.now = 3.0
    poller.run_due(schedule)
    assert schedule.state.retry_at == pytest.approx(7.0)  # 4 s: capped at backoff_max
    clock.now = 7.0
    poller.run_due(schedule)
    assert schedule.state.retry_at == pytest.approx(11.0)

    replies["holding_register"], replies["coil"] = REGISTERS, [False]
    clock.now = 11.0
    poller.run_due(schedule)
    back = emitted[-1]
    assert (back[0].metric, back[0].value, back[0].attributes) == ("_status.online", True, None)
    assert _values(back[1:]) == {"temp": 21.5, "count": 7, "run": False}
    assert schedule.state.failures == 0 and schedule.state.retry_at == 0.0
    assert poller.stats.failed_polls == 4


def test_a_refused_request_loses_only_its_tags() -> None:
    refused = ModbusReadError("exception 2 (illegal data address)", answered=True)
    poller, _, _, emitted = _poller({"holding_register": refused, "coil": [True]})
    poller.run_due(poller.schedules[0])
    (readings,) = emitted
    assert _values(readings) == {"_status.online": True, "run": True}
    assert poller.stats.block_errors == 1
    assert poller.schedules[0].state.retry_at == 0.0  # answered: no backoff


def test_a_failure_mid_poll_keeps_values_already_read_and_reports_offline_last() -> None:
    silent = ModbusReadError("connect failed", answered=False)
    poller, _, _, emitted = _poller({"coil": [True], "holding_register": silent})
    poller.run_due(poller.schedules[0])
    (readings,) = emitted
    assert [(r.metric, r.value) for r in readings] == [("run", True), ("_status.online", False)]


def test_values_that_cannot_be_emitted_are_skipped_and_counted() -> None:
    nan = [0x7FC0, 0x0000, 9]
    poller, _, _, emitted = _poller({"holding_register": nan, "coil": [True]})
    poller.run_due(poller.schedules[0])
    assert _values(emitted[0]) == {"_status.online": True, "run": True, "count": 9}
    assert poller.stats.decode_errors == 1


def _reading(i: int) -> Reading:
    from datetime import UTC, datetime

    return Reading(device="d", metric=f"m{i}", ts=datetime.now(UTC), value=i)


def test_buffer_drops_the_oldest_poll_when_full_and_counts_it() -> None:
    buffer = PollBuffer(2, "d")
    buffer.put([_reading(0), _reading(1)])
    buffer.put([_reading(2)])
    buffer.put([])  # empty polls take no room
    buffer.put([_reading(3)])
    assert buffer.dropped == 2
    assert [r.metric for r in buffer.drain()] == ["m2", "m3"]
    assert buffer.drain() == []
