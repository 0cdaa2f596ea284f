"""Modbus register codec: registers <-> values for every data type and word order.

>>> [hex(r) for r in encode_value(123456.0, "float32", "ABCD")]
['0x47f1', '0x2000']
>>> [hex(r) for r in encode_value(123456.0, "float32", "BADC")]
['0xf147', '0x20']
>>> decode_registers([0x2000, 0x47F1], "float32", "CDAB")
123456.0
>>> decode_registers(encode_value(-2, "int64", "DCBA"), "int64", "DCBA")
-2

A value's bytes are laid out big-endian first (``A B C D ...``, most
significant first), then the word order is applied over the whole value:
word swap (CDAB, DCBA) reverses the order of its 16-bit registers, byte swap
(BADC, DCBA) swaps the two bytes inside each register. The table is in
:mod:`connectors.modbus.config`. Pure functions, no I/O.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

from connectors.modbus.config import REGISTERS_PER_TYPE, ModbusTag
from schemas.models import Value

_STRUCT: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
_WORD_SWAP = frozenset({"CDAB", "DCBA"})
_BYTE_SWAP = frozenset({"BADC", "DCBA"})


class DecodeError(ValueError):
    """A tag's registers do not hold a value StreamForge can emit (reason in the message)."""


def registers_to_bytes(registers: Sequence[int], word_order: str) -> bytes:
    """The value's bytes, most significant first, from its registers in address order."""
    regs = list(reversed(registers)) if word_order in _WORD_SWAP else list(registers)
    # Packing each register little-endian is exactly swapping its two bytes.
    endian = "<" if word_order in _BYTE_SWAP else ">"
    return struct.pack(f"{endian}{len(regs)}H", *regs)


def bytes_to_registers(data: bytes, word_order: str) -> list[int]:
    """Registers in address order holding ``data`` (most significant byte first)."""
    if len(data) % 2:
        data += b"\x00"
    endian = "<" if word_order in _BYTE_SWAP else ">"
    regs = list(struct.unpack(f"{endian}{len(data) // 2}H", data))
    return list(reversed(regs)) if word_order in _WORD_SWAP else regs


def decode_registers(
    registers: Sequence[int], data_type: str, word_order: str = "ABCD", encoding: str = "utf-8"
) -> int | float | str:
    """The raw value of a numeric or string tag (no scale/offset). Raises :class:`DecodeError`."""
    data = registers_to_bytes(registers, word_order)
    if data_type == "string":
        text = data.rstrip(b"\x00")
        try:
            return text.decode(encoding)
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"string is not {encoding}: {exc.reason} at byte {exc.start}"
            ) from None
    code = _STRUCT.get(data_type)
    if code is None:
        raise DecodeError(f"unknown data type {data_type!r}")
    if len(registers) != REGISTERS_PER_TYPE[data_type]:
        raise DecodeError(f"{data_type} needs {REGISTERS_PER_TYPE[data_type]} registers")
    value: int | float = struct.unpack(f">{code}", data)[0]
    if data_type == "float32":
        return shortest_float32(value, data)
    return value


def shortest_float32(value: float, packed: bytes) -> float:
    """The shortest decimal that is the same float32 (21.5 not 21.500000953674316).

    A float32 widened to a double shows digits the device never meant; the
    shortest decimal with the same float32 bits is exact in the sense that
    it converts back to exactly the registers read. NaN and infinities pass.
    """
    if not math.isfinite(value):
        return value
    # 9 significant digits always round-trip a float32; more digits never
    # break a round trip, so binary-search the fewest that work.
    low, high, best = 1, 9, value
    while low <= high:
        digits = (low + high) // 2
        candidate = float(f"{value:.{digits}g}")
        try:
            same = struct.pack(">f", candidate) == packed
        except OverflowError:  # rounding near the float32 maximum may go past it
            same = False
        if same:
            best, high = candidate, digits - 1
        else:
            low = digits + 1
    return best


def encode_value(
    value: int | float | str,
    data_type: str,
    word_order: str = "ABCD",
    length: int | None = None,
    encoding: str = "utf-8",
) -> list[int]:
    """Registers (address order) holding ``value``; the inverse of :func:`decode_registers`.

    Strings are NUL-padded to ``length`` registers. Used by test servers and
    benchmarks to lay out known contents.
    """
    if data_type == "string":
        data = str(value).encode(encoding)
        size = 2 * (length if length is not None else (len(data) + 1) // 2)
        if len(data) > size:
            raise ValueError(f"{value!r} does not fit in {size // 2} registers")
        return bytes_to_registers(data.ljust(size, b"\x00"), word_order)
    if data_type == "bool":
        return [1 if value else 0]
    return bytes_to_registers(struct.pack(f">{_STRUCT[data_type]}", value), word_order)


TagDecoder = Callable[[Sequence[int]], Value]
"""Turns a tag's own registers into its reading value (raises :class:`DecodeError`)."""


def make_decoder(tag: ModbusTag, default_order: str) -> TagDecoder:
    """A decoder for one register tag, with formats and word order resolved once.

    Polls decode every tag on every poll; resolving the type, order and
    scale up front keeps that to a slice, a pack and an unpack.
    """
    data_type = tag.type or "uint16"
    if data_type == "bool":
        if tag.bit is None:
            return lambda words: words[0] != 0
        mask = 1 << tag.bit
        return lambda words: bool(words[0] & mask)
    order = tag.word_order or default_order
    if data_type == "string":
        encoding = tag.encoding
        return lambda words: decode_registers(words, "string", order, encoding)
    width = REGISTERS_PER_TYPE[data_type]
    pack = struct.Struct(f"{'<' if order in _BYTE_SWAP else '>'}{width}H").pack
    unpack = struct.Struct(f">{_STRUCT[data_type]}").unpack
    reverse = order in _WORD_SWAP
    is_float32 = data_type == "float32"
    scaled = tag.scale != 1.0 or tag.offset != 0.0
    scale, offset = tag.scale, tag.offset

    def decode(words: Sequence[int]) -> Value:
        data = pack(*(words[::-1] if reverse else words))
        value: int | float = unpack(data)[0]
        if is_float32:
            value = shortest_float32(value, data)
        if scaled:
            value = value * scale + offset
        if isinstance(value, float) and not math.isfinite(value):
            raise DecodeError(f"{data_type} value is {value} (not finite)")
        return value

    return decode


def tag_value(tag: ModbusTag, words: Sequence[int], default_order: str) -> Value:
    """The reading value of a register tag from its own registers (scale/offset applied).

    Raises :class:`DecodeError` for values that cannot be emitted: NaN or
    infinite floats, text that is not in the tag's encoding.
    """
    return make_decoder(tag, default_order)(words)
