"""Configuration of the Modbus source: connections, devices and their register maps.

A source polls one or more devices. Each device is reached over Modbus TCP
(``transport: tcp``), RTU framing over a TCP socket (``rtu_over_tcp``, e.g.
a serial-to-Ethernet converter in transparent mode) or RTU over a serial line
(``rtu``, needs ``pyserial``). Its tags are organised in groups; every tag of
a group is read at the group's ``interval`` and the connector coalesces
neighbouring registers into as few requests as possible
(:mod:`connectors.modbus.plan`).

>>> config = ModbusSourceConfig.model_validate({
...     "type": "modbus", "tenant": "plant-a",
...     "devices": [{"name": "press-1", "host": "10.0.0.7", "unit_id": 3,
...                  "groups": [{"interval": "500ms", "tags": [
...                      {"metric": "temperature", "address": 0, "type": "float32",
...                       "word_order": "CDAB", "unit": "degC"}]}]}]})
>>> config.devices[0].groups[0].interval
0.5

Word and byte order (``word_order``) of multi-register values, for a value
whose big-endian bytes are ``A B C D`` (32 bit) or ``A B C D E F G H`` (64
bit), read from registers r0 (lowest address), r1, ...:

=====  ========================  ==================  ==========================
order  meaning                   32 bit: r0 r1       64 bit: r0 r1 r2 r3
=====  ========================  ==================  ==========================
ABCD   big-endian (Modbus std)   AB CD               AB CD EF GH
CDAB   words swapped             CD AB               GH EF CD AB
BADC   bytes swapped in words    BA DC               BA DC FE HG
DCBA   little-endian             DC BA               HG FE DC BA
=====  ========================  ==================  ==========================

In general: *word swap* means the registers hold the value's 16-bit words
least significant first (the register order is reversed over the whole
value), *byte swap* means each register holds its two bytes low byte first.
CDAB is word swap, BADC byte swap, DCBA both. For 16-bit types only the byte
swap matters (BADC and DCBA read ``BA``); for strings the same rules apply
to the string's N registers (BADC is the common "swapped characters" case).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Function = Literal["coil", "discrete_input", "holding_register", "input_register"]
"""Modbus object types: function codes 1 (coils), 2, 3 (holding) and 4 (input registers)."""

DataType = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
]
"""How a tag's registers (or bit) are decoded."""

WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
"""Word and byte order of multi-byte values (see the module docstring)."""

Transport = Literal["tcp", "rtu_over_tcp", "rtu"]
"""Modbus TCP, RTU framing over a TCP socket, or RTU over a serial line."""

BIT_FUNCTIONS: frozenset[str] = frozenset({"coil", "discrete_input"})
"""Functions that read single bits (up to 2000 per request)."""

REGISTERS_PER_TYPE: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
"""Registers one value of each fixed-size type occupies (strings: their ``length``)."""

NUMERIC_TYPES: frozenset[str] = frozenset(REGISTERS_PER_TYPE) - {"bool"}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(value: Any) -> Any:
    """A duration as seconds: numbers pass through, ``"250ms"``, ``"2s"``, ``"1m"`` convert.

    The grammar of ``schemas.durations.parse_duration`` without days (a poll
    interval or timeout of days is a typo), and numbers are left to pydantic.
    """
    if not isinstance(value, str):
        return value
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like 250ms, 2s or 1m")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Seconds = Annotated[float, Field(gt=0.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModbusTag(_Strict):
    """One value read from a device: where it lives, how to decode it, what to call it.

    ``function`` selects the object type. Coils and discrete inputs are
    always ``bool``. On registers, ``bool`` is true when the register is not
    zero, or when bit ``bit`` (0 = least significant) is set. ``string``
    reads ``length`` registers (two characters each) and drops trailing NUL
    bytes. Numbers become ``raw * scale + offset``; with the defaults (scale
    1, offset 0) integers stay integers, otherwise the value is a float.
    ``word_order`` defaults to the device's.
    """

    metric: str = Field(min_length=1, max_length=200)
    function: Function = "holding_register"
    address: int = Field(ge=0, le=65535, description="0-based protocol address")
    type: DataType | None = Field(None, description="default: bool for bits, uint16 otherwise")
    length: int | None = Field(None, ge=1, le=125, description="registers of a string")
    bit: int | None = Field(None, ge=0, le=15, description="bit of a register for bool")
    word_order: WordOrder | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    encoding: str = Field("utf-8", description="text encoding of a string tag")

    @model_validator(mode="after")
    def _check(self) -> ModbusTag:
        bits = self.function in BIT_FUNCTIONS
        if self.type is None:
            self.type = "bool" if bits else "uint16"
        if bits and self.type != "bool":
            raise ValueError(f"{self.metric}: {self.function} values are bool, not {self.type}")
        if bits and (self.bit is not None or self.word_order is not None):
            raise ValueError(f"{self.metric}: bit and word_order apply to registers only")
        if self.type == "string":
            if self.length is None:
                raise ValueError(f"{self.metric}: a string tag needs length (registers)")
            try:  # unknown encodings fail here, with the config's message, not at poll time
                "probe".encode(self.encoding)
            except LookupError:
                raise ValueError(f"{self.metric}: unknown encoding {self.encoding!r}") from None
        elif self.length is not None:
            raise ValueError(f"{self.metric}: length applies to string tags only")
        if self.bit is not None and self.type != "bool":
            raise ValueError(f"{self.metric}: bit applies to bool tags only")
        if self.type not in NUMERIC_TYPES and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"{self.metric}: scale and offset apply to numbers only")
        if self.address + self.width - 1 > 65535:
            raise ValueError(f"{self.metric}: address {self.address} + size is beyond 65535")
        return self

    @property
    def width(self) -> int:
        """Registers (or bits) the tag occupies."""
        if self.function in BIT_FUNCTIONS:
            return 1
        if self.type == "string":
            return self.length or 1
        return REGISTERS_PER_TYPE[self.type or "uint16"]


class ModbusTagGroup(_Strict):
    """Tags polled together every ``interval`` (seconds or ``"100ms"``, ``"5s"``)."""

    name: str = Field("default", min_length=1)
    interval: Seconds = Field(1.0, description="poll period; polls stay on start + k*interval")
    tags: list[ModbusTag] = Field(min_length=1)

    @field_validator("interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _seconds(value)


class ModbusDevice(_Strict):
    """One Modbus device (a unit id behind a connection) and its register map.

    ``name`` is the ``device`` of its readings. Devices that name the same
    ``gateway`` share one connection (one serial line, or one TCP gateway in
    front of several unit ids) and are polled one after another by the same
    thread; their connection settings must match. Every other device has its
    own connection and thread, so a dead device never delays another.

    A request that gets no answer within ``timeout`` is retried ``retries``
    times (reconnecting first). A poll whose requests all fail marks the
    device offline; it is then polled again only after a backoff that doubles
    from ``backoff_initial`` to ``backoff_max`` (polls in between are skipped).

    Coalescing: tags of a group with the same function are read in one request
    when the registers between them number at most ``max_gap`` and the request
    stays within ``max_registers_per_read`` (coils and discrete inputs:
    ``max_bits_per_read``).
    """

    name: str = Field(min_length=1, max_length=200)
    transport: Transport = "tcp"
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    serial_port: str | None = Field(None, description="rtu: /dev/ttyUSB0 or a pyserial URL")
    baudrate: int = Field(19200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    gateway: str | None = Field(None, min_length=1, description="share a connection")
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id")
    timeout: Seconds = Field(1.0, description="per request attempt")
    retries: int = Field(1, ge=0, le=10, description="extra attempts of a failed request")
    backoff_initial: Seconds = 1.0
    backoff_max: Seconds = 60.0
    word_order: WordOrder = "ABCD"
    max_gap: int = Field(10, ge=0, le=2000, description="unused registers read to merge")
    max_registers_per_read: int = Field(125, ge=1, le=125)
    max_bits_per_read: int = Field(2000, ge=1, le=2000)
    groups: list[ModbusTagGroup] = Field(min_length=1)

    @field_validator("timeout", "backoff_initial", "backoff_max", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _seconds(value)

    @model_validator(mode="after")
    def _check(self) -> ModbusDevice:
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError(f"device {self.name}: transport rtu needs serial_port")
        if self.backoff_max < self.backoff_initial:
            raise ValueError(f"device {self.name}: backoff_max must be >= backoff_initial")
        names = [group.name for group in self.groups]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            # The poller picks a group's requests by name: two groups of one name
            # would each poll both groups' tags, at both intervals.
            raise ValueError(
                f"device {self.name}: group names must differ, {twice} used twice "
                "(groups without a name are called 'default')"
            )
        seen: set[str] = set()
        for group in self.groups:
            for tag in group.tags:
                if tag.metric in seen:
                    raise ValueError(f"device {self.name}: metric {tag.metric!r} defined twice")
                seen.add(tag.metric)
                if tag.function not in BIT_FUNCTIONS and tag.width > self.max_registers_per_read:
                    raise ValueError(
                        f"device {self.name}: {tag.metric} needs {tag.width} registers, "
                        f"more than max_registers_per_read {self.max_registers_per_read}"
                    )
        return self

    @property
    def connection_key(self) -> str:
        """The Bytewax partition (and connection) this device is polled on."""
        return self.gateway or self.name

    def connection_settings(self) -> tuple[Any, ...]:
        """What must be equal for devices sharing a gateway."""
        return (
            self.transport,
            self.host,
            self.port,
            self.serial_port,
            self.baudrate,
            self.parity,
            self.stopbits,
            self.bytesize,
            self.timeout,
        )


class ModbusSourceConfig(BaseModel):
    """Modbus devices and their register maps. See ``connectors/modbus/source.py``.

    Each connection (a device, or all devices naming one ``gateway``) is one
    Bytewax partition polled by its own thread. ``queue_size`` bounds the
    polls buffered per partition between that thread and the dataflow; when
    full, the oldest poll is dropped and counted. ``drain_interval`` is how
    often an idle partition looks for new readings. ``status_metric`` names
    the bool reading emitted when a device goes offline (false) or comes back
    (true); it is also emitted once with the first poll's outcome.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"] = "modbus"
    name: str = "modbus"
    tenant: str = Field("default", min_length=1, max_length=200)
    devices: list[ModbusDevice] = Field(min_length=1)
    queue_size: int = Field(1000, ge=1, description="polls buffered per partition")
    drain_interval: Seconds = Field(0.02, le=1.0, description="idle partition check period")
    status_metric: str = Field("_status.online", min_length=1, max_length=200)
    log_plan: bool = Field(True, description="log each partition's request plan at start")

    @field_validator("drain_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _seconds(value)

    @model_validator(mode="after")
    def _check(self) -> ModbusSourceConfig:
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate device names {dupes}")
        settings: dict[str, tuple[Any, ...]] = {}
        for device in self.devices:
            if device.gateway is not None and device.gateway in names:
                raise ValueError(f"gateway {device.gateway!r} is also a device name")
            first = settings.setdefault(device.connection_key, device.connection_settings())
            if first != device.connection_settings():
                raise ValueError(
                    f"devices on gateway {device.connection_key!r} have different "
                    "connection settings (transport, host, port, serial, timeout)"
                )
        return self

    def connections(self) -> dict[str, list[ModbusDevice]]:
        """Devices by partition key (device name, or gateway name when shared)."""
        result: dict[str, list[ModbusDevice]] = {}
        for device in self.devices:
            result.setdefault(device.connection_key, []).append(device)
        return result
