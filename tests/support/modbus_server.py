"""A real Modbus server on loopback with known register contents, for tests, benchmarks, demos.

>>> from connectors.modbus.config import ModbusTag
>>> image = UnitImage()
>>> image.put(ModbusTag(metric="t", address=10, type="float32"), 21.5, "CDAB")
>>> image.holding
{10: 0, 11: 16812}
>>> with SimulatedServer({1: image}) as server:  # doctest: +SKIP
...     ...  # poll 127.0.0.1:server.port, unit 1; server.requests(1) counts reads

Run it from the command line to serve every Modbus device of a pipeline
config with a plausible value in each tag (devices listening on
127.0.0.1 / localhost only, one server per port)::

    python -m tests.support.modbus_server connectors/modbus/sample.yaml

The server is pymodbus' own (``ModbusTcpServer`` with ``SimDevice``
datastores, Modbus TCP or RTU framing over TCP) running on an asyncio loop
in a background thread. Every read it serves is counted per unit id and
function code (:meth:`SimulatedServer.requests`), which is how tests verify
the coalescing of requests.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from connectors.modbus.codec import encode_value
from connectors.modbus.config import ModbusDevice, ModbusTag
from schemas.models import Value

_FUNCTION_FIELD = {
    "coil": "coils",
    "discrete_input": "discrete_inputs",
    "holding_register": "holding",
    "input_register": "inputs",
}


@dataclass
class UnitImage:
    """Register contents of one unit id: address -> value per object type."""

    coils: dict[int, bool] = field(default_factory=dict)
    discrete_inputs: dict[int, bool] = field(default_factory=dict)
    holding: dict[int, int] = field(default_factory=dict)
    inputs: dict[int, int] = field(default_factory=dict)

    def put(self, tag: ModbusTag, raw: Value, default_order: str = "ABCD") -> None:
        """Store a tag's raw value (before scale/offset) encoded as the tag says."""
        table: dict[int, Any] = getattr(self, _FUNCTION_FIELD[tag.function])
        if tag.function in ("coil", "discrete_input"):
            table[tag.address] = bool(raw)
            return
        if tag.type == "bool" and tag.bit is not None:
            mask = 1 << tag.bit
            current = table.get(tag.address, 0)
            table[tag.address] = (current | mask) if raw else (current & ~mask)
            return
        words = encode_value(
            raw,
            tag.type or "uint16",
            tag.word_order or default_order,
            tag.length,
            tag.encoding,
        )
        for i, word in enumerate(words):
            table[tag.address + i] = word

    def simdevice(self, unit_id: int, action: Any) -> SimDevice:
        """The pymodbus device: one dense block per object type (gaps read as 0 / false)."""
        return SimDevice(
            id=unit_id,
            simdata=(
                _bits_block(self.coils),
                _bits_block(self.discrete_inputs),
                _register_block(self.holding),
                _register_block(self.inputs),
            ),
            action=action,
        )


def _register_block(table: dict[int, int]) -> list[SimData]:
    if not table:
        return [SimData(0, values=[0], datatype=DataType.REGISTERS)]
    first, last = min(table), max(table)
    values = [table.get(a, 0) for a in range(first, last + 1)]
    return [SimData(first, values=values, datatype=DataType.REGISTERS)]


def _bits_block(table: dict[int, bool]) -> list[SimData]:
    if not table:
        return [SimData(0, values=[False], datatype=DataType.BITS)]
    first, last = min(table), max(table)
    values = [table.get(a, False) for a in range(first, last + 1)]
    return [SimData(first, values=values, datatype=DataType.BITS)]


def sample_value(tag: ModbusTag) -> Value:
    """A deterministic, plausible raw value for a tag (from a hash of its metric)."""
    seed = int.from_bytes(hashlib.sha256(tag.metric.encode()).digest()[:4], "big")
    kind = tag.type or "uint16"
    if kind == "bool":
        return bool(seed & 1)
    if kind == "string":
        return f"{tag.metric[: 2 * (tag.length or 1)]}"
    if kind.startswith("float"):
        return round((seed % 100_000) / 100.0, 2)
    if kind.startswith("int"):
        return (seed % 20_001) - 10_000
    return seed % 60_000


def image_for(
    devices: list[ModbusDevice], values: dict[tuple[str, str], Value] | None = None
) -> tuple[dict[int, UnitImage], dict[tuple[str, str], Value]]:
    """Unit images serving every tag of ``devices``, and the raw value put in each.

    ``values`` picks raw values by (device, metric); others get :func:`sample_value`.
    """
    units: dict[int, UnitImage] = {}
    used: dict[tuple[str, str], Value] = {}
    for device in devices:
        image = units.setdefault(device.unit_id, UnitImage())
        for group in device.groups:
            for tag in group.tags:
                raw = (values or {}).get((device.name, tag.metric), sample_value(tag))
                image.put(tag, raw, device.word_order)
                used[(device.name, tag.metric)] = raw
    return units, used


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimulatedServer:
    """A pymodbus TCP server on loopback serving ``units`` (unit id -> image).

    ``framer`` is ``"socket"`` (Modbus TCP) or ``"rtu"`` (RTU framing over
    TCP). ``port`` defaults to a free one. Use as a context manager or call
    :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        units: dict[int, UnitImage],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        framer: str = "socket",
    ) -> None:
        self.units = units
        self.host = host
        self.port = port or free_port()
        self.framer = FramerType.RTU if framer == "rtu" else FramerType.SOCKET
        self._counts: Counter[tuple[int, int]] = Counter()
        self.counters: dict[int, int] = {}
        """unit id -> a holding register that counts the reads served (one more per read):
        each poll's value is then its number, so a client's readings show any poll lost."""
        self.busy = False
        """While true, every request is answered with the exception 'device busy', not counted."""
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    async def _count(
        self,
        unit_id: int,
        function_code: int,
        start: int,
        _address: int,
        _count: int,
        registers: list[int],
        _values: Any,
    ) -> ExcCodes | None:
        if self.busy:
            return ExcCodes.DEVICE_BUSY
        with self._lock:
            self._counts[(unit_id, function_code)] += 1
            counter = self.counters.get(unit_id)
            if counter is not None and function_code == 3 and 0 <= counter - start < len(registers):
                registers[counter - start] = (registers[counter - start] + 1) & 0xFFFF
        return None

    def requests(self, unit_id: int | None = None, function_code: int | None = None) -> int:
        """Requests served so far, optionally of one unit id and/or function code."""
        with self._lock:
            return sum(
                n
                for (unit, fc), n in self._counts.items()
                if unit_id in (None, unit) and function_code in (None, fc)
            )

    def reset_counts(self) -> None:
        """Forget the requests counted so far."""
        with self._lock:
            self._counts.clear()

    def start(self) -> SimulatedServer:
        """Start serving; returns once the port accepts connections."""
        self._thread = threading.Thread(
            target=self._run, name=f"modbus-sim-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"modbus simulator on port {self.port} did not start")
        if self._error is not None:
            raise RuntimeError(f"modbus simulator on port {self.port} failed") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(), which raises it
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        devices = [
            image.simdevice(unit, functools.partial(self._count, unit))
            for unit, image in sorted(self.units.items())
        ]
        server = ModbusTcpServer(devices, address=(self.host, self.port), framer=self.framer)
        await server.serve_forever(background=True)
        self._ready.set()
        try:
            await self._done
        finally:
            await server.shutdown()

    def stop(self) -> None:
        """Stop serving and close the port (clients see their connection dropped)."""
        if self._loop is not None and self._done is not None and not self._done.done():
            self._loop.call_soon_threadsafe(self._done.set_result, None)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> SimulatedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve the Modbus devices of a pipeline config until interrupted."""
    from flows.config import load_pipeline_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("config", help="pipeline config YAML with modbus sources")
    args = parser.parse_args(argv)
    config = load_pipeline_config(args.config)
    by_port: dict[tuple[int, str], list[ModbusDevice]] = {}
    for source in config.sources:
        if source.type != "modbus":
            continue
        for device in source.devices:
            if device.transport == "rtu" or device.host not in ("127.0.0.1", "localhost"):
                print(f"skipping {device.name}: not a TCP device on this host")
                continue
            framer = "rtu" if device.transport == "rtu_over_tcp" else "socket"
            by_port.setdefault((device.port, framer), []).append(device)
    servers = []
    for (port, framer), devices in sorted(by_port.items()):
        units, _ = image_for(devices)
        servers.append(SimulatedServer(units, port=port, framer=framer).start())
        print(f"serving {[d.name for d in devices]} on 127.0.0.1:{port} ({framer})")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
