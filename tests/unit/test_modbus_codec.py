"""Register codec: the word-order table, every type, round trips, scale and errors."""

from __future__ import annotations

import contextlib
import math
import struct
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.modbus.codec import (
    DecodeError,
    decode_registers,
    encode_value,
    shortest_float32,
    tag_value,
)
from connectors.modbus.config import ModbusTag

ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]

# The documented table: value bytes A..H (most significant first) -> registers r0, r1, ...
TABLE_32 = {  # 0x11223344: A=11 B=22 C=33 D=44
    "ABCD": [0x1122, 0x3344],
    "CDAB": [0x3344, 0x1122],
    "BADC": [0x2211, 0x4433],
    "DCBA": [0x4433, 0x2211],
}
TABLE_64 = {  # 0x1122334455667788: A=11 ... H=88
    "ABCD": [0x1122, 0x3344, 0x5566, 0x7788],
    "CDAB": [0x7788, 0x5566, 0x3344, 0x1122],
    "BADC": [0x2211, 0x4433, 0x6655, 0x8877],
    "DCBA": [0x8877, 0x6655, 0x4433, 0x2211],
}


@pytest.mark.parametrize("order", ORDERS)
def test_32_bit_word_orders_follow_the_documented_table(order: str) -> None:
    assert encode_value(0x11223344, "uint32", order) == TABLE_32[order]
    assert decode_registers(TABLE_32[order], "uint32", order) == 0x11223344


@pytest.mark.parametrize("order", ORDERS)
def test_64_bit_word_orders_follow_the_documented_table(order: str) -> None:
    assert encode_value(0x1122334455667788, "uint64", order) == TABLE_64[order]
    assert decode_registers(TABLE_64[order], "uint64", order) == 0x1122334455667788


def test_dcba_is_the_little_endian_layout_of_the_value() -> None:
    registers = encode_value(1.5, "float64", "DCBA")
    data = b"".join(r.to_bytes(2, "big") for r in registers)
    assert data == struct.pack("<d", 1.5)


def test_16_bit_types_only_see_the_byte_swap() -> None:
    assert encode_value(0x1234, "uint16", "ABCD") == [0x1234]
    assert encode_value(0x1234, "uint16", "CDAB") == [0x1234]
    assert encode_value(0x1234, "uint16", "BADC") == [0x3412]
    assert encode_value(0x1234, "uint16", "DCBA") == [0x3412]
    assert decode_registers([0xFFFE], "int16") == -2


def test_known_float32_layout() -> None:
    # 123456.0 is 0x47F12000 in IEEE 754 single precision.
    assert encode_value(123456.0, "float32", "ABCD") == [0x47F1, 0x2000]
    assert decode_registers([0x2000, 0x47F1], "float32", "CDAB") == 123456.0
    assert decode_registers([0xF147, 0x0020], "float32", "BADC") == 123456.0


def test_strings_drop_trailing_nuls_and_honour_byte_swap() -> None:
    assert encode_value("AB", "string", "ABCD", length=2) == [0x4142, 0x0000]
    assert encode_value("AB", "string", "BADC", length=1) == [0x4241]
    assert decode_registers([0x4142, 0x4300, 0x0000], "string") == "ABC"
    assert decode_registers([0x4241, 0x0043], "string", "BADC") == "ABC"
    with pytest.raises(ValueError, match="does not fit"):
        encode_value("ABCDE", "string", length=2)


INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@settings(max_examples=200, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(INT_RANGES)), order=st.sampled_from(ORDERS))
def test_integers_round_trip_exactly(data: st.DataObject, kind: str, order: str) -> None:
    low, high = INT_RANGES[kind]
    value = data.draw(st.integers(low, high))
    registers = encode_value(value, kind, order)
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode_registers(registers, kind, order) == value


@settings(max_examples=200, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False), order=st.sampled_from(ORDERS))
def test_float64_round_trips_exactly(value: float, order: str) -> None:
    assert decode_registers(encode_value(value, "float64", order), "float64", order) == value


@settings(max_examples=200, deadline=None)
@given(
    value=st.floats(width=32, allow_nan=False, allow_infinity=False),
    order=st.sampled_from(ORDERS),
)
def test_float32_decodes_to_the_same_bits_with_the_fewest_digits(value: float, order: str) -> None:
    registers = encode_value(value, "float32", order)
    decoded = decode_registers(registers, "float32", order)
    assert struct.pack(">f", decoded) == struct.pack(">f", value)
    digits = len(Decimal(repr(decoded)).normalize().as_tuple().digits)
    if digits > 1:  # one digit fewer would no longer be the same float32
        shorter = float(f"{decoded:.{digits - 1}g}")
        with contextlib.suppress(OverflowError):
            assert struct.pack(">f", shorter) != struct.pack(">f", value)


def test_shortest_float32_of_a_typical_sensor_value() -> None:
    packed = struct.pack(">f", 21.7)
    widened = struct.unpack(">f", packed)[0]
    assert widened != 21.7  # what a naive decoder would emit
    assert shortest_float32(widened, packed) == 21.7


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(st.characters(min_codepoint=1, max_codepoint=0x7FF), max_size=20),
    order=st.sampled_from(ORDERS),
)
def test_strings_round_trip(text: str, order: str) -> None:
    length = (len(text.encode()) + 1) // 2 + 1
    registers = encode_value(text, "string", order, length=length)
    assert len(registers) == length
    assert decode_registers(registers, "string", order) == text


def _tag(**fields: object) -> ModbusTag:
    return ModbusTag.model_validate({"metric": "m", "address": 0, **fields})


def test_scale_and_offset_make_floats_and_defaults_keep_ints() -> None:
    assert tag_value(_tag(type="int16"), [0xFFFE], "ABCD") == -2
    assert type(tag_value(_tag(type="int16"), [0xFFFE], "ABCD")) is int
    assert tag_value(_tag(type="uint16", scale=0.1, offset=-40), [650], "ABCD") == pytest.approx(
        25.0
    )
    assert type(tag_value(_tag(type="uint16", scale=0.5), [3], "ABCD")) is float


def test_tag_word_order_overrides_the_device_default() -> None:
    registers = encode_value(7, "int32", "CDAB")
    assert tag_value(_tag(type="int32", word_order="CDAB"), registers, "ABCD") == 7
    assert tag_value(_tag(type="int32"), registers, "CDAB") == 7
    assert tag_value(_tag(type="int32"), registers, "ABCD") == 7 << 16


def test_bool_on_a_register_reads_a_bit_or_non_zero() -> None:
    assert tag_value(_tag(type="bool"), [0], "ABCD") is False
    assert tag_value(_tag(type="bool"), [0x100], "ABCD") is True
    assert tag_value(_tag(type="bool", bit=3), [0b1000], "ABCD") is True
    assert tag_value(_tag(type="bool", bit=2), [0b1000], "ABCD") is False


@pytest.mark.parametrize("bits", [0x7FC00000, 0x7F800000, 0xFF800000])
def test_nan_and_infinity_are_not_emitted(bits: int) -> None:
    registers = [bits >> 16, bits & 0xFFFF]
    decoded = decode_registers(registers, "float32")
    assert isinstance(decoded, float) and not math.isfinite(decoded)
    with pytest.raises(DecodeError, match="not finite"):
        tag_value(_tag(type="float32"), registers, "ABCD")


def test_text_in_the_wrong_encoding_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not ascii"):
        tag_value(_tag(type="string", length=1, encoding="ascii"), [0xC3A9], "ABCD")
    assert tag_value(_tag(type="string", length=1), [0xC3A9], "ABCD") == "é"


def test_wrong_register_count_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="needs 2 registers"):
        decode_registers([1, 2, 3], "int32")
