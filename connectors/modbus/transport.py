"""One Modbus connection (TCP, RTU over TCP, RTU serial) with timeouts, retries and clear errors.

>>> from connectors.modbus.config import ModbusDevice
>>> device = ModbusDevice.model_validate(
...     {"name": "press-1", "port": 5020, "groups": [{"tags": [{"metric": "t", "address": 0}]}]})
>>> connection = ModbusConnection(device)
>>> connection.read(1, "holding_register", 0, 10)  # doctest: +SKIP
[0, 17, 42, ...]

A device that does not answer (here: nothing listens on its port) is a
:class:`ModbusReadError` with ``answered`` false, after the retries:

>>> silent = ModbusDevice.model_validate({"name": "press-2", "host": "127.0.0.1", "port": 1,
...                                       "groups": [{"tags": [{"metric": "t", "address": 0}]}]})
>>> try:
...     ModbusConnection(silent).read(1, "holding_register", 0, 10)
... except ModbusReadError as exc:
...     print(exc.reason, exc.answered)
connect failed (2 attempts) False

A blocking pymodbus client, used only from the connection's own polling
thread (:mod:`connectors.modbus.poller`). Every failure raises
:class:`ModbusReadError`, which says whether the device answered (an
exception response: the device is there but refuses the request) or not
(connection refused, timeout, gateway target not responding: the device
counts as offline). After a failure without an answer the connection is
closed and the next attempt reconnects, which also resynchronises RTU
framing after a late or partial response.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from connectors.modbus.config import ModbusDevice

# pymodbus logs every failed connect and timeout at error level with a frame
# dump; the poller logs each device's offline/online transitions itself, so
# unless the user configured the pymodbus logger, only its critical lines pass.
_PYMODBUS_LOG = logging.getLogger("pymodbus.logging")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)

# Exception codes a TCP gateway returns when the device behind it is silent:
# 10 gateway path unavailable, 11 gateway target device failed to respond.
_GATEWAY_SILENT = frozenset({10, 11})

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusReadError(Exception):
    """A read that produced no values. ``answered`` is False when the device did not respond."""

    def __init__(self, reason: str, answered: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.answered = answered


def serial_available() -> bool:
    """Whether pyserial (needed by ``transport: rtu``) is installed."""
    return importlib.util.find_spec("serial") is not None


class ModbusConnection:
    """A lazily (re)connected pymodbus client for one device or gateway.

    ``retries`` extra attempts are made for a request that got no answer,
    each after closing and reopening the connection. The client's own
    retries are disabled so that one attempt takes at most ``timeout``.
    """

    def __init__(self, device: ModbusDevice) -> None:
        self.name = device.connection_key
        self.retries = device.retries
        self.client: ModbusTcpClient | ModbusSerialClient
        if device.transport == "rtu":
            if not serial_available():
                raise RuntimeError("transport rtu needs pyserial: pip install pyserial")
            self.client = ModbusSerialClient(
                device.serial_port or "",
                framer=FramerType.RTU,
                baudrate=device.baudrate,
                bytesize=device.bytesize,
                parity=device.parity,
                stopbits=device.stopbits,
                timeout=device.timeout,
                retries=0,
                name=self.name,
            )
        else:
            framer = FramerType.RTU if device.transport == "rtu_over_tcp" else FramerType.SOCKET
            self.client = ModbusTcpClient(
                device.host,
                port=device.port,
                framer=framer,
                timeout=device.timeout,
                retries=0,
                name=self.name,
            )
        self.requests = 0
        """Requests sent (attempts, including retries)."""

    def read(self, unit_id: int, function: str, address: int, count: int) -> list[int] | list[bool]:
        """``count`` registers (ints) or bits (bools) from ``address``. Raises ModbusReadError."""
        error: ModbusReadError | None = None
        for _attempt in range(self.retries + 1):
            try:
                return self._read_once(unit_id, function, address, count)
            except ModbusReadError as exc:
                if exc.answered:
                    raise
                error = exc
                self.close()
        assert error is not None
        if self.retries:
            error.reason = f"{error.reason} ({self.retries + 1} attempts)"
        raise error

    def _read_once(
        self, unit_id: int, function: str, address: int, count: int
    ) -> list[int] | list[bool]:
        self.requests += 1
        client = self.client
        try:
            if function == "holding_register":
                response = client.read_holding_registers(address, count=count, device_id=unit_id)
            elif function == "input_register":
                response = client.read_input_registers(address, count=count, device_id=unit_id)
            elif function == "coil":
                response = client.read_coils(address, count=count, device_id=unit_id)
            else:
                response = client.read_discrete_inputs(address, count=count, device_id=unit_id)
        except ModbusException as exc:
            # ConnectionException (cannot connect, connection lost) and
            # ModbusIOException (no response within the timeout).
            raise ModbusReadError(_short(exc), answered=False) from None
        except OSError as exc:
            raise ModbusReadError(f"{type(exc).__name__}: {exc}", answered=False) from None
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            reason = f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"
            raise ModbusReadError(reason, answered=code not in _GATEWAY_SILENT)
        if function in ("coil", "discrete_input"):
            bits = list(response.bits)
            if len(bits) < count:
                raise ModbusReadError(f"short response: {len(bits)} of {count} bits", True)
            return bits[:count]
        registers = list(response.registers)
        if len(registers) != count:
            raise ModbusReadError(f"short response: {len(registers)} of {count} registers", True)
        return registers

    def close(self) -> None:
        """Close the connection (the next read reconnects)."""
        # Closing a broken socket may fail again; it is gone either way.
        with contextlib.suppress(OSError):
            self.client.close()


def _short(exc: ModbusException) -> str:
    text = str(exc).replace("Modbus Error: ", "").strip()
    if "No response received" in text or "No response" in text:
        return "timeout: no response"
    if "Failed to connect" in text or "cannot connect" in text:
        return "connect failed"
    return text[:200]
