"""Modbus input: poll device registers into readings, one Bytewax partition per connection.

>>> from bytewax import operators as op
>>> from bytewax.dataflow import Dataflow
>>> from bytewax.testing import run_main
>>> config = ModbusSourceConfig.model_validate({
...     "tenant": "plant-a",
...     "devices": [{
...         "name": "press-1", "host": "127.0.0.1", "port": 5020, "unit_id": 1,
...         "groups": [{"interval": "1s", "tags": [
...             {"metric": "temperature", "address": 0, "type": "float32", "unit": "degC"},
...             {"metric": "running", "function": "coil", "address": 0},
...         ]}],
...     }],
... })
>>> source = ModbusSource(config)
>>> flow = Dataflow("modbus-example")
>>> readings = op.input("modbus", flow, source)
>>> op.inspect("show", readings)
Stream(...)
>>> run_main(flow)   # polls until interrupted  # doctest: +SKIP

Nothing connects before the flow runs; the partitions and the requests of
each poll are known from the config alone:

>>> source.list_parts()
['press-1']
>>> [(r["function"], r["address"], r["count"], r["tags"]) for r in describe_source_plan(config)]
[('coil', 0, 1, ['running']), ('holding_register', 0, 2, ['temperature'])]

The source is a ``FixedPartitionedSource`` whose partitions are connections:
a device, or all devices naming the same ``gateway`` (one serial line or TCP
gateway). Partitions spread over workers and processes like any other.

Bytewax calls ``next_batch`` of the partitions on one worker one after the
other, so a blocking read of a dead device there would stall every other
device on that worker. Instead each partition runs a
:class:`~connectors.modbus.poller.ConnectionPoller` on its own thread (drift-free
schedule, timeouts, retries, exponential backoff, online status readings) that
hands each poll to a bounded :class:`~connectors.modbus.buffer.PollBuffer`;
``next_batch`` only drains that buffer and never blocks, and ``next_awake``
paces idle partitions (``drain_interval``).

The snapshot is ``None``: a poll cannot be replayed, so after a restart
polling simply resumes with current values.

Each partition logs its request plan when it starts (``log_plan``);
:func:`describe_source_plan` returns the same plan without connecting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.modbus.buffer import PollBuffer
from connectors.modbus.config import ModbusDevice, ModbusSourceConfig
from connectors.modbus.plan import ReadBlock, describe_plan, plan_device
from connectors.modbus.poller import ConnectionPoller, log
from connectors.modbus.transport import ModbusConnection, serial_available
from schemas.models import Reading

__all__ = ["ModbusPartition", "ModbusSource", "describe_source_plan", "source_plan"]


def source_plan(config: ModbusSourceConfig) -> dict[str, list[ReadBlock]]:
    """Every request of every poll, by partition (connection) key."""
    return {
        key: [block for device in devices for block in plan_device(device)]
        for key, devices in config.connections().items()
    }


def describe_source_plan(config: ModbusSourceConfig) -> list[dict[str, Any]]:
    """The request plan of a source as JSON-compatible dicts (one per request)."""
    result = []
    for key, blocks in source_plan(config).items():
        for entry in describe_plan(blocks):
            entry["partition"] = key
            result.append(entry)
    return result


class ModbusPartition(StatefulSourcePartition[Reading, None]):
    """One connection's readings. Its polling thread starts when the partition is built.

    ``next_batch`` returns whatever polls completed since the last call;
    an empty list when none did. If the polling thread died of a bug, it
    raises, so the dataflow fails loudly instead of going quiet.
    """

    def __init__(
        self,
        key: str,
        devices: list[ModbusDevice],
        config: ModbusSourceConfig,
        *,
        stop_event: threading.Event | None = None,
        connect: Callable[[ModbusDevice], ModbusConnection] = ModbusConnection,
    ) -> None:
        self.key = key
        self.buffer = PollBuffer(config.queue_size, key)
        self.poller = ConnectionPoller(
            key,
            devices,
            tenant=config.tenant,
            status_metric=config.status_metric,
            emit=self.buffer.put,
            connect=connect,
        )
        self._drain = timedelta(seconds=config.drain_interval)
        self._stop = threading.Event()
        self._external_stop = stop_event
        self._had_items = False
        self._finished = False
        if config.log_plan:
            log.info(
                "modbus request plan",
                extra={
                    "device": key,
                    "step": "plan",
                    "requests": describe_plan(self.poller.plan()),
                },
            )
        self._thread = threading.Thread(
            target=self.poller.run, args=(self._stop,), name=f"modbus-{key}", daemon=True
        )
        self._thread.start()

    def next_batch(self) -> list[Reading]:
        """Readings of the polls completed since the last call (never blocks)."""
        if self._finished:
            raise StopIteration
        items = self.buffer.drain()
        if self._external_stop is not None and self._external_stop.is_set():
            self.close()
            self._finished = True
            return items + self.buffer.drain()
        if not items and not self._thread.is_alive():
            raise RuntimeError(f"the modbus poller of {self.key} stopped; see its error log")
        self._had_items = bool(items)
        return items

    def next_awake(self) -> datetime | None:
        """Right away while polls keep arriving, else after ``drain_interval``."""
        if self._had_items:
            return None
        return datetime.now(UTC) + self._drain

    def snapshot(self) -> None:
        """Nothing to resume: polling restarts with current values."""
        return None

    def close(self) -> None:
        """Stop the polling thread (waits for an in-flight request)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()


class ModbusSource(FixedPartitionedSource[Reading, None]):
    """Readings polled from Modbus devices; one partition per connection.

    ``stop_event`` (tests, benchmarks) ends every partition once set.
    ``connect`` builds a connection from a device's settings (the default
    speaks real Modbus through pymodbus). ``partitions`` holds the partitions
    built in this process, for inspection (poller stats, plan).
    """

    def __init__(
        self,
        config: ModbusSourceConfig,
        *,
        stop_event: threading.Event | None = None,
        connect: Callable[[ModbusDevice], ModbusConnection] = ModbusConnection,
    ) -> None:
        if any(d.transport == "rtu" for d in config.devices) and not serial_available():
            raise RuntimeError("a Modbus device uses transport rtu, which needs pyserial")
        self.config = config
        self.stop_event = stop_event
        self.connect = connect
        self.partitions: dict[str, ModbusPartition] = {}

    def list_parts(self) -> list[str]:
        """Connection keys: a device name, or a gateway shared by several devices."""
        return sorted(self.config.connections())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> ModbusPartition:
        """Start polling one connection."""
        partition = ModbusPartition(
            for_part,
            self.config.connections()[for_part],
            self.config,
            stop_event=self.stop_event,
            connect=self.connect,
        )
        self.partitions[for_part] = partition
        return partition

    def plan(self) -> list[ReadBlock]:
        """Every request of every poll of every device, in partition order."""
        return [block for blocks in source_plan(self.config).values() for block in blocks]
