"""The Modbus source against real pymodbus servers on loopback (Modbus TCP and RTU over TCP).

Each test starts its own server (``tests.support.modbus_server.SimulatedServer``:
pymodbus' ``ModbusTcpServer`` on a free port, in a background thread) with
known register contents, so nothing here needs ``make up``.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.modbus.config import ModbusDevice, ModbusSourceConfig
from connectors.modbus.poller import ConnectionPoller
from connectors.modbus.source import ModbusPartition, ModbusSource
from schemas.models import Reading, Value
from tests.support.modbus_server import SimulatedServer, UnitImage, free_port, image_for

ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]

# Two values per type, chosen so that a wrong word or byte order cannot decode
# to the same number (no palindromic byte patterns).
TYPE_VALUES: dict[str, tuple[Value, Value]] = {
    "int16": (-12345, 0x1234),
    "uint16": (0xFEDC, 0x0102),
    "int32": (-(2**31), 0x12345678),
    "uint32": (2**32 - 2, 0x01020304),
    "int64": (-(2**63) + 5, 0x0123456789ABCDEF),
    "uint64": (2**64 - 3, 0x1122334455667788),
    "float32": (-123.456, 3.4028235e38),
    "float64": (2.718281828459045, -1.5e-300),
}


def _every_type_tags() -> tuple[list[dict[str, Any]], dict[str, Value]]:
    """Tags of every type in every word order, laid out back to back, and their raw values."""
    tags: list[dict[str, Any]] = []
    values: dict[str, Value] = {}
    address = 0
    for order in ORDERS:
        for kind, pair in TYPE_VALUES.items():
            for i, value in enumerate(pair):
                metric = f"{kind}.{order}.{i}"
                tags.append(
                    {"metric": metric, "address": address, "type": kind, "word_order": order}
                )
                values[metric] = value
                address += {
                    "int16": 1,
                    "uint16": 1,
                    "int32": 2,
                    "uint32": 2,
                    "float32": 2,
                    "int64": 4,
                    "uint64": 4,
                    "float64": 4,
                }[kind]
    # 160 holding registers so far. Then strings, bits of a register, a scaled value.
    for order, text in (("ABCD", "Press #1"), ("BADC", "Ölpumpe")):
        tags.append(
            {
                "metric": f"string.{order}",
                "address": address,
                "type": "string",
                "length": 6,
                "word_order": order,
            }
        )
        values[f"string.{order}"] = text
        address += 6
    tags.append({"metric": "flag.bit0", "address": address, "type": "bool", "bit": 0})
    tags.append({"metric": "flag.bit15", "address": address, "type": "bool", "bit": 15})
    tags.append({"metric": "flag.bit7", "address": address, "type": "bool", "bit": 7})
    values.update({"flag.bit0": True, "flag.bit15": True, "flag.bit7": False})
    tags.append(
        {"metric": "scaled", "address": address + 1, "type": "int16", "scale": 0.1, "offset": -40.0}
    )
    values["scaled"] = 655  # -> 25.5
    for i in range(20):  # coils 0..19 alternate, discrete inputs 100..109 all true
        tags.append({"metric": f"coil.{i}", "function": "coil", "address": i})
        values[f"coil.{i}"] = i % 2 == 0
    for i in range(10):
        tags.append({"metric": f"di.{i}", "function": "discrete_input", "address": 100 + i})
        values[f"di.{i}"] = True
    tags.append(
        {
            "metric": "ir.float",
            "function": "input_register",
            "address": 3,
            "type": "float32",
            "word_order": "CDAB",
        }
    )
    tags.append({"metric": "ir.u16", "function": "input_register", "address": 5})
    values.update({"ir.float": 21.7, "ir.u16": 65535})
    return tags, values


def _device(name: str, port: int, tags: list[dict[str, Any]], **fields: Any) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {"name": name, "port": port, "timeout": 1.0, "groups": [{"tags": tags}], **fields}
    )


def _expected(raw: dict[str, Value]) -> dict[str, Value]:
    expected = dict(raw)
    expected["scaled"] = 655 * 0.1 - 40.0
    return expected


def _poll_once(device: ModbusDevice) -> tuple[list[Reading], ConnectionPoller]:
    poller = ConnectionPoller(
        device.connection_key,
        [device],
        tenant="plant-a",
        status_metric="_status.online",
        emit=lambda _r: None,
    )
    readings = [r for schedule in poller.schedules for r in poller.poll(schedule)]
    assert poller.connection is not None
    poller.connection.close()
    return readings, poller


@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp"])
def test_every_type_and_word_order_decodes_exactly_in_few_requests(transport: str) -> None:
    tags, raw = _every_type_tags()
    device = _device("press-1", 1, tags, transport=transport, unit_id=7)
    units, _ = image_for([device], {("press-1", m): v for m, v in raw.items()})
    framer = "rtu" if transport == "rtu_over_tcp" else "socket"
    with SimulatedServer(units, framer=framer) as server:
        device = device.model_copy(update={"port": server.port})
        readings, poller = _poll_once(device)
        requests = server.requests(unit_id=7)

    values = {r.metric: r.value for r in readings}
    assert values.pop("_status.online") is True
    assert values == _expected(raw)
    for metric in ("int64.DCBA.0", "uint64.CDAB.1", "float32.BADC.0", "ir.u16"):
        assert type(values[metric]) is type(raw[metric])
    # 174 holding registers -> 2 requests (124 + 50: a float64 at 122..125 is never
    # split across requests); input registers, coils, discrete inputs: 1 each.
    plan = poller.plan()
    assert [(b.function, b.address, b.count) for b in plan] == [
        ("coil", 0, 20),
        ("discrete_input", 100, 10),
        ("holding_register", 0, 124),
        ("holding_register", 124, 50),
        ("input_register", 3, 3),
    ]
    assert requests == len(plan) == 5  # for 75 tags
    assert all(r.source == "modbus" and r.tenant == "plant-a" for r in readings)


def test_a_refused_request_drops_only_its_tags() -> None:
    image = UnitImage(holding={0: 11, 1: 12})
    tags = [
        {"metric": "a", "address": 0},
        {"metric": "b", "address": 1},
        {"metric": "missing", "address": 900},
    ]
    with SimulatedServer({1: image}) as server:
        readings, poller = _poll_once(_device("d", server.port, tags, max_gap=0))
    assert {r.metric: r.value for r in readings} == {"_status.online": True, "a": 11, "b": 12}
    assert poller.stats.block_errors == 1


def test_units_behind_one_gateway_share_a_connection() -> None:
    config = ModbusSourceConfig.model_validate(
        {
            "devices": [
                {
                    "name": f"pump-{unit}",
                    "gateway": "line-1",
                    "transport": "rtu_over_tcp",
                    "port": 1,
                    "unit_id": unit,
                    "groups": [{"tags": [{"metric": "flow", "address": 0, "type": "float32"}]}],
                }
                for unit in (2, 3)
            ]
        }
    )
    units = {2: UnitImage(), 3: UnitImage()}
    for unit, device in zip((2, 3), config.devices, strict=True):
        units[unit].put(device.groups[0].tags[0], 10.5 * unit)
    with SimulatedServer(units, framer="rtu") as server:
        devices = [d.model_copy(update={"port": server.port}) for d in config.devices]
        poller = ConnectionPoller(
            "line-1", devices, tenant="t", status_metric="_status.online", emit=lambda _r: None
        )
        readings = [r for s in poller.schedules for r in poller.poll(s)]
        assert poller.connection is not None
        poller.connection.close()
        assert server.requests(2) == server.requests(3) == 1
    assert [(r.device, r.value) for r in readings if r.metric == "flow"] == [
        ("pump-2", 21.0),
        ("pump-3", 31.5),
    ]


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield int(sock.getsockname()[1])
    sock.close()


def test_dead_devices_do_not_stall_a_live_one_on_the_same_worker(blackhole: int) -> None:
    interval = 0.1
    tag = [{"metric": "level", "address": 0, "type": "uint16"}]
    live_units, _ = image_for([_device("live", 1, tag)], {("live", "level"): 42})
    with SimulatedServer(live_units) as server:
        config = ModbusSourceConfig.model_validate(
            {
                "tenant": "plant-a",
                "devices": [
                    {
                        "name": "live",
                        "port": server.port,
                        "timeout": 0.5,
                        "groups": [{"interval": interval, "tags": tag}],
                    },
                    # Refuses connections.
                    {
                        "name": "dead",
                        "port": free_port(),
                        "timeout": 0.5,
                        "backoff_initial": 0.1,
                        "backoff_max": 0.2,
                        "groups": [{"interval": interval, "tags": tag}],
                    },
                    # Accepts, never answers: every poll blocks its thread for 2 x 0.5 s.
                    {
                        "name": "silent",
                        "port": blackhole,
                        "timeout": 0.5,
                        "backoff_initial": 0.1,
                        "backoff_max": 0.2,
                        "groups": [{"interval": interval, "tags": tag}],
                    },
                ],
            }
        )
        stop = threading.Event()
        arrivals: list[tuple[float, Reading]] = []
        flow = Dataflow("modbus-isolation")
        readings = op.input("modbus", flow, ModbusSource(config, stop_event=stop))
        stamped = op.map("stamp", readings, lambda r: (time.monotonic(), r))
        op.output("out", stamped, TestingSink(arrivals))
        timer = threading.Timer(3.0, stop.set)
        timer.start()
        run_main(flow)  # one worker: all three partitions share it
        timer.join()

    by_device: dict[str, list[tuple[float, Reading]]] = {}
    for arrival, reading in arrivals:
        by_device.setdefault(reading.device, []).append((arrival, reading))
    live = [(t, r) for t, r in by_device["live"] if r.metric == "level"]
    assert all(r.value == 42 for _, r in live)
    # Isolation, not speed: the live device keeps its interval although both
    # other partitions on this worker are blocked in failing reads.
    assert len(live) >= 10, f"only {len(live)} live polls in 3 s"
    arrival_gaps = [b[0] - a[0] for a, b in itertools.pairwise(live)]
    poll_gaps = [(b[1].ts - a[1].ts).total_seconds() for a, b in itertools.pairwise(live)]
    assert statistics.median(arrival_gaps) < 1.5 * interval, arrival_gaps
    assert statistics.median(poll_gaps) < 1.5 * interval, poll_gaps

    for name, error in (("dead", "connect"), ("silent", "timeout")):
        statuses = [r for _, r in by_device[name]]
        assert statuses, f"{name} produced no status"
        assert all(r.metric == "_status.online" for r in statuses), "no fake values"
        assert statuses[0].value is False
        assert statuses[0].attributes is not None and error in statuses[0].attributes["error"]
    assert [r.value for _, r in by_device["live"] if r.metric == "_status.online"] == [True]


def _wait_for(partition: ModbusPartition, seen: list[Reading], predicate: Any) -> None:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        seen.extend(partition.next_batch())
        if any(predicate(r) for r in seen):
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met; got {[(r.metric, r.value) for r in seen]}")


def test_offline_online_offline_transitions_produce_status_readings() -> None:
    port = free_port()
    tag = [{"metric": "level", "address": 0}]
    config = ModbusSourceConfig.model_validate(
        {
            "devices": [
                {
                    "name": "tank-1",
                    "port": port,
                    "timeout": 0.3,
                    "backoff_initial": 0.1,
                    "backoff_max": 0.2,
                    "groups": [{"interval": 0.1, "tags": tag}],
                }
            ]
        }
    )
    units, _ = image_for(config.devices, {("tank-1", "level"): 5})
    partition = ModbusPartition("tank-1", config.devices, config)
    seen: list[Reading] = []
    try:

        def status(value: bool) -> Any:
            return lambda r: r.metric == "_status.online" and r.value is value

        _wait_for(partition, seen, status(False))
        assert [r.metric for r in seen] == ["_status.online"]  # nothing but the status
        server = SimulatedServer(units, port=port).start()
        try:
            _wait_for(partition, seen, lambda r: r.metric == "level")
        finally:
            server.stop()
        after: list[Reading] = []
        _wait_for(partition, after, status(False))
        seen.extend(after)
    finally:
        partition.close()
    statuses = [r.value for r in seen if r.metric == "_status.online"]
    assert statuses[:2] == [False, True] and False in statuses[2:]
    first_value = next(i for i, r in enumerate(seen) if r.metric == "level")
    assert seen[first_value - 1].value is True  # online is reported before the values
    assert {r.value for r in seen if r.metric == "level"} == {5}


def test_rtu_over_a_serial_port_url() -> None:
    pytest.importorskip("serial", reason="transport rtu needs pyserial, not yet a dependency")
    tag = [{"metric": "v", "address": 0, "type": "float32", "word_order": "CDAB"}]
    units, _ = image_for([_device("m", 1, tag)], {("m", "v"): 230.5})
    with SimulatedServer(units, framer="rtu") as server:
        device = ModbusDevice.model_validate(
            {
                "name": "m",
                "transport": "rtu",
                "serial_port": f"socket://127.0.0.1:{server.port}",
                "timeout": 1.0,
                "groups": [{"tags": tag}],
            }
        )
        readings, _ = _poll_once(device)
    assert {r.metric: r.value for r in readings} == {"_status.online": True, "v": 230.5}
