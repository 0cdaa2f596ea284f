"""Decoding payloads into readings and dead letters (flows/decode.py)."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.decode import decode_many, decode_payload
from schemas.config import DecodeConfig
from schemas.models import DeadLetter, RawMessage, Reading, adapter, to_json

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CONFIG = DecodeConfig()


def raw(payload: bytes, **kw: Any) -> RawMessage:
    kw.setdefault("source", "mqtt")
    kw.setdefault("received_at", NOW - timedelta(seconds=1))
    kw.setdefault("origin", "plant/line1")
    return RawMessage(payload=payload, **kw)


def decode(payload: bytes | str, config: DecodeConfig = CONFIG, **kw: Any):
    if isinstance(payload, str):
        payload = payload.encode()
    return decode_payload(raw(payload, **kw), config, NOW)


def one_dead(payload: bytes | str, config: DecodeConfig = CONFIG, **kw: Any) -> DeadLetter:
    readings, dead = decode(payload, config, **kw)
    assert readings == []
    assert len(dead) == 1, dead
    return dead[0]


def seconds_until(year: int) -> int:
    return int((datetime(year, 1, 1, tzinfo=UTC) - NOW).total_seconds())


def obj(**fields: Any) -> str:
    base = {"device": "press-1", "metric": "temperature", "value": 71.5}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


# --- happy paths -------------------------------------------------------------


def test_object_becomes_reading_with_source_from_connector() -> None:
    readings, dead = decode(
        obj(ts="2026-01-01T11:59:00Z", unit="C", quality="uncertain", source="opcua"),
        source="kafka",
    )
    assert dead == []
    (r,) = readings
    assert (r.device, r.metric, r.value, r.unit, r.quality) == (
        "press-1",
        "temperature",
        71.5,
        "C",
        "uncertain",
    )
    assert r.ts == datetime(2026, 1, 1, 11, 59, tzinfo=UTC)
    assert r.ts.tzinfo is UTC
    assert r.source == "kafka"  # the payload's "opcua" does not count
    assert r.tenant == "default"


def test_value_types_are_kept() -> None:
    values = [1, 2.5, True, False, "RUNNING", 10**30]
    payload = json.dumps([{"device": "d", "metric": "m", "value": v} for v in values])
    readings, dead = decode(payload)
    assert dead == []
    assert [r.value for r in readings] == values
    assert [type(r.value) for r in readings] == [type(v) for v in values]


def test_missing_ts_takes_received_at() -> None:
    received = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    (r,), _ = decode(obj(), received_at=received)
    assert r.ts == received
    (r,), _ = decode(obj(ts=None), received_at=received)
    assert r.ts == received


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-01-01T13:00:00+02:00", datetime(2026, 1, 1, 11, 0, tzinfo=UTC)),
        ("2026-01-01T11:00:00.250Z", datetime(2026, 1, 1, 11, 0, 0, 250000, tzinfo=UTC)),
        (1767265200, datetime(2026, 1, 1, 11, 0, tzinfo=UTC)),  # seconds
        (1767265200.5, datetime(2026, 1, 1, 11, 0, 0, 500000, tzinfo=UTC)),
        (1767265200123, datetime(2026, 1, 1, 11, 0, 0, 123000, tzinfo=UTC)),  # ms
        (1767265200123456, datetime(2026, 1, 1, 11, 0, 0, 123456, tzinfo=UTC)),  # us
        (1767265200123456789, datetime(2026, 1, 1, 11, 0, 0, 123456, tzinfo=UTC)),  # ns
        ("1767265200", datetime(2026, 1, 1, 11, 0, tzinfo=UTC)),  # numeric string
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(ts: Any, expected: datetime) -> None:
    readings, dead = decode(obj(ts=ts))
    assert dead == []
    assert readings[0].ts == expected
    assert readings[0].ts.tzinfo is UTC


def test_defaults_fill_missing_fields_and_payload_wins() -> None:
    defaults = {"device": "topic-dev", "metric": "topic-metric", "tenant": "acme", "unit": "bar"}
    payload = json.dumps([{"value": 1}, {"device": "own", "value": 2, "tenant": "other"}])
    readings, dead = decode(payload, defaults=defaults)
    assert dead == []
    assert [(r.device, r.metric, r.tenant, r.unit) for r in readings] == [
        ("topic-dev", "topic-metric", "acme", "bar"),
        ("own", "topic-metric", "other", "bar"),
    ]


def test_default_tenant_from_config() -> None:
    (r,), _ = decode(obj(), DecodeConfig(default_tenant="plant-7"))
    assert r.tenant == "plant-7"


def test_bare_number_uses_defaults() -> None:
    readings, dead = decode(b" 42.5\n", defaults={"device": "d", "metric": "m"}, fmt="number")
    assert dead == []
    assert (readings[0].device, readings[0].metric, readings[0].value) == ("d", "m", 42.5)
    assert readings[0].ts == NOW - timedelta(seconds=1)


def test_bare_string_and_bool_accepted_in_auto_mode() -> None:
    defaults = {"device": "d", "metric": "state.mode"}
    assert decode(b'"RUNNING"', defaults=defaults)[0][0].value == "RUNNING"
    assert decode(b"true", defaults=defaults)[0][0].value is True


def test_utf8_bom_is_skipped() -> None:
    readings, dead = decode(b"\xef\xbb\xbf" + obj().encode())
    assert dead == [] and len(readings) == 1


def test_decode_many_passes_readings_through_and_flattens() -> None:
    reading = Reading(device="sim", metric="m", ts=NOW, value=1.0)
    out = decode_many([reading, raw(b"[" + obj().encode() + b", 7]"), raw(b"nope")], CONFIG, NOW)
    assert out[0] is reading
    assert [type(x) for x in out] == [Reading, Reading, DeadLetter, DeadLetter]
    dead = [x for x in out if isinstance(x, DeadLetter)]
    assert dead[0].reason == "item 1: expected a JSON object, got number"
    assert dead[1].reason.startswith("payload is not valid JSON: ")


# --- failures, one reason each ----------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{nope", "payload is not valid JSON: key must be a string at line 1 column 2"),
        (b"", "payload is empty"),
        (b"hello", "payload is not valid JSON: expected value at line 1 column 1"),
        (
            obj(value=float("nan")),
            "value: must be a finite number (NaN and infinity are not allowed)",
        ),
        (
            obj(value=float("inf")),
            "value: must be a finite number (NaN and infinity are not allowed)",
        ),
        (
            b'{"device":"d","metric":"m","value":1e999}',
            "value: must be a finite number (NaN and infinity are not allowed)",
        ),
        (obj(value=[1, 2]), "value: expected number, bool or string, got array"),
        (obj(value=None), "value: expected number, bool or string, got null"),
        (obj(value={"a": 1}), "value: expected number, bool or string, got object"),
        (obj(value=...), "missing field value"),
        (obj(device=...), "missing field device"),
        (obj(metric=...), "missing field metric"),
        (obj(device=""), "device: must not be empty"),
        (obj(device="x" * 201), "device: must be at most 200 characters"),
        (obj(device=5), "device: expected string, got number"),
        (obj(colour="red"), "unknown field colour"),
        (obj(quality="great"), "quality: must be one of 'good', 'uncertain' or 'bad', got 'great'"),
        (obj(attributes={"a": 1}), "attributes.a: expected string, got number"),
        (obj(attributes=[1]), "attributes: expected object, got array"),
        (obj(ts="2026-01-01T11:00:00"), "ts: timestamp has no timezone"),
        (obj(ts="yesterday"), "ts: 'yesterday' is not an ISO 8601 timestamp or an epoch number"),
        (obj(ts=True), "ts: expected an ISO 8601 string or an epoch number, got bool"),
        (obj(ts=[1]), "ts: expected an ISO 8601 string or an epoch number, got array"),
        (obj(ts=1e30), "ts: epoch 1e+30 is out of the supported range (years 1-9999)"),
        (obj(ts="NaN"), "ts: must be a finite number (NaN and infinity are not allowed)"),
        (
            obj(ts="2030-01-01T00:00:00Z"),
            f"ts 2030-01-01T00:00:00Z is {seconds_until(2030)} s in the future"
            " (max_future_skew_s 300)",
        ),
        (b"null", "expected an object, an array of objects or a bare value, got JSON null"),
        (b"[]", "payload is an empty JSON array (no readings)"),
        (b"42", "missing field device (a bare value takes it from the source's defaults)"),
    ],
)
def test_failure_reasons(payload: bytes | str, reason: str) -> None:
    dead = one_dead(payload)
    assert dead.reason == reason
    assert dead.origin == "plant/line1"
    assert dead.source == "mqtt"
    assert dead.step == "decode"
    assert dead.payload == (payload.decode() if isinstance(payload, bytes) else payload)
    assert dead.payload_encoding == "utf-8"


def test_several_problems_in_one_object_are_all_named_once() -> None:
    dead = one_dead(obj(device="", value=[1], colour="red"))
    assert dead.reason == (
        "device: must not be empty; value: expected number, bool or string, got array;"
        " unknown field colour"
    )


def test_future_skew_is_configurable() -> None:
    ts = (NOW + timedelta(seconds=100)).isoformat()
    assert decode(obj(ts=ts))[1] == []
    dead = one_dead(obj(ts=ts), DecodeConfig(max_future_skew_s=10))
    assert dead.reason == "ts 2026-01-01T12:01:40Z is 100 s in the future (max_future_skew_s 10)"


def test_non_utf8_payload_is_kept_base64() -> None:
    payload = b'{"device": "\xff\xfe", "value": 1}'
    dead = one_dead(payload)
    assert dead.reason == "payload is not UTF-8 (invalid start byte 0xff at byte 12)"
    assert dead.payload_encoding == "base64"
    assert base64.b64decode(dead.payload) == payload


def test_oversized_payload() -> None:
    config = DecodeConfig(max_payload_bytes=100)
    payload = b"[" + b",".join([obj().encode()] * 5) + b"]"
    dead = one_dead(payload, config)
    assert dead.reason == f"payload of {len(payload)} bytes exceeds max_payload_bytes 100"
    assert dead.payload == payload.decode()


def test_oversized_array_is_one_dead_letter() -> None:
    payload = "[" + ",".join([obj()] * 4) + "]"
    dead = one_dead(payload, DecodeConfig(max_batch_items=3))
    assert dead.reason == "array of 4 items exceeds max_batch_items 3"


@pytest.mark.parametrize(
    ("fmt", "payload", "reason"),
    [
        ("object", "[1]", "expected a JSON object, got a JSON array"),
        ("array", obj(), "expected a JSON array of objects, got a JSON object"),
        ("number", obj(), "expected a bare number, got a JSON object"),
        ("number", '"on"', "expected a bare number, got JSON string"),
        ("object", "nope", "payload is not valid JSON: expected ident at line 1 column 2"),
    ],
)
def test_fmt_restricts_shape(fmt: Any, payload: str, reason: str) -> None:
    assert one_dead(payload, fmt=fmt, defaults={"device": "d", "metric": "m"}).reason == reason


def test_invalid_defaults_are_named_in_the_reason() -> None:
    dead = one_dead('{"metric": "m", "value": 1}', defaults={"device": ""})
    assert dead.reason == "missing field device (default device '' is not a valid name)"
    dead = one_dead(obj(), defaults={"quality": "superb"})
    assert dead.reason == "quality: default quality 'superb' is not good/uncertain/bad"
    # A payload that carries its own quality does not need the default.
    assert decode(obj(quality="bad"), defaults={"quality": "superb"})[1] == []


def test_batch_mixing_good_and_bad_items() -> None:
    items = [
        {"device": "d", "metric": "a", "value": 1},
        5,
        {"device": "d", "metric": "b", "value": float("nan")},
        {"device": "d", "value": 2},
        {"device": "d", "metric": "c", "value": 3, "ts": "2026-01-01T11:00:00Z"},
        {"device": "d", "metric": "e", "value": 4, "ts": "2099-01-01T00:00:00Z", "tenant": "t9"},
        {"device": "d", "metric": "f", "value": 5, "extra": 1},
    ]
    readings, dead = decode(json.dumps(items), defaults={"tenant": "acme"})
    assert [r.metric for r in readings] == ["a", "c"]
    assert [d.reason for d in dead] == [
        "item 1: expected a JSON object, got number",
        "item 2: value: must be a finite number (NaN and infinity are not allowed)",
        "item 3: missing field metric",
        f"item 5: ts 2099-01-01T00:00:00Z is {seconds_until(2099)} s in the future"
        " (max_future_skew_s 300)",
        "item 6: unknown field extra",
    ]
    # Each dead letter keeps its own item, so it can be replayed alone.
    assert json.loads(dead[0].payload) == 5
    assert json.loads(dead[2].payload) == items[3]
    assert json.loads(dead[3].payload) == items[5]
    assert math.isnan(json.loads(dead[1].payload)["value"])
    assert [d.tenant for d in dead] == ["acme", "acme", "acme", "t9", "acme"]
    assert all(d.origin == "plant/line1" for d in dead)


def test_non_bytes_payload_does_not_raise() -> None:
    message = RawMessage(payload="42", source="http", received_at=NOW)  # type: ignore[arg-type]
    readings, dead = decode_payload(message, CONFIG, NOW)
    assert readings == [] and dead[0].reason.startswith("missing field device")


def test_internal_error_becomes_a_dead_letter() -> None:
    # A connector bug (no received_at) must not abort the dataflow either.
    message = RawMessage(payload=b"{}", source="mqtt", received_at=None)  # type: ignore[arg-type]
    readings, dead = decode_payload(message, CONFIG, NOW)
    assert readings == []
    assert dead[0].reason.startswith("internal decoder error: AttributeError")
    assert dead[0].payload == "{}"


def test_dead_letters_and_readings_serialise() -> None:
    readings, dead = decode(json.dumps([{"device": "d", "metric": "m", "value": 1}, [None]]))
    assert json.loads(to_json(readings[0]))["device"] == "d"
    assert json.loads(to_json(dead[0]))["reason"] == "item 1: expected a JSON object, got array"


# --- property: garbage in, an accounted-for answer out -----------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # naive
    st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))).map(lambda d: d.isoformat()),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(),
    json_values,
)
names = (
    st.sampled_from(["press-1", "temperature", "", "x" * 201]) | st.text(max_size=5) | json_values
)
fields = {
    "device": names,
    "metric": names,
    "value": json_scalars | json_values,
    "ts": timestamps,
    "tenant": names,
    "quality": st.sampled_from(["good", "bad", "uncertain", "excellent"]) | json_values,
    "unit": st.sampled_from(["C", None]) | json_values,
    "attributes": st.dictionaries(st.text(max_size=4), st.text(max_size=4)) | json_values,
    "source": json_values,
    "junk": json_values,
}
partial_objects = st.fixed_dictionaries({}, optional=fields)
# Mostly valid objects, so that readings (not only dead letters) are checked too:
# valid required fields, optional fields drawn from the valid-or-junk strategies.
good_values = (
    st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.booleans() | st.text()
)
good_timestamps = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.isoformat()) | st.integers(min_value=0, max_value=1767225600)
near_valid_objects = st.fixed_dictionaries(
    {
        "device": st.text(min_size=1, max_size=10),
        "metric": st.text(min_size=1, max_size=10),
        "value": good_values,
    },
    optional={
        "ts": good_timestamps | timestamps,
        "quality": st.sampled_from(["good", "bad", "uncertain"]),
        "unit": st.sampled_from(["C", None]),
        "tenant": names,
        "junk": json_values,
    },
)
items = near_valid_objects | partial_objects | json_values


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(_dump),
    partial_objects.map(_dump),
    near_valid_objects.map(_dump),
    st.lists(items, max_size=8).map(_dump),
)
defaults = st.none() | st.fixed_dictionaries(
    {}, optional={"device": st.sampled_from(["dev", ""]), "metric": st.just("m")}
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=payloads,
    defaults=defaults,
    fmt=st.sampled_from(["auto", "auto", "object", "array", "number"]),
)
def test_garbage_never_raises_and_everything_is_accounted_for(
    payload: bytes, defaults: dict[str, str] | None, fmt: Any
) -> None:
    message = raw(payload, defaults=defaults, fmt=fmt, source="http")
    readings, dead = decode_payload(message, CONFIG, NOW)
    assert len(readings) + len(dead) >= 1
    try:
        parsed = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if fmt in ("auto", "array") and isinstance(parsed, list) and parsed:
        # Every item of an array is either a reading or its own dead letter.
        assert len(readings) + len(dead) == len(parsed)
        for letter in dead:
            assert letter.reason.startswith("item ")
    for reading in readings:
        # Every reading is a valid Reading: it survives a JSON round trip
        # through the strict schema, with a UTC timestamp and the connector's source.
        again = adapter(Reading).validate_json(to_json(reading))
        assert again == reading
        assert reading.ts.utcoffset() == timedelta(0)
        assert reading.source == "http"
    for letter in dead:
        assert letter.reason and letter.origin == "plant/line1"
        # The catch-all is for bugs; garbage must get a real reason.
        assert not letter.reason.startswith("internal decoder error"), letter.reason
        adapter(DeadLetter).validate_json(to_json(letter))


def test_an_oversized_payload_becomes_a_dead_letter_any_broker_takes() -> None:
    """A 2.1 MB payload (over max_payload_bytes): its dead letter keeps 64 KiB, size and hash."""
    import hashlib

    payload = json.dumps({"device": "d", "metric": "m", "value": 1, "pad": "x" * 2_200_000})
    raw = RawMessage(payload.encode(), "mqtt", datetime.now(UTC), "plant/d/m")
    readings, [dead] = decode_payload(raw, DecodeConfig())
    assert readings == []
    assert "payload" in dead.reason and "bytes" in dead.reason
    assert len(dead.payload.encode()) <= DeadLetter.payload_limit == 65_536
    assert dead.payload_size == len(payload)
    assert dead.payload_sha256 == hashlib.sha256(payload.encode()).hexdigest()
    assert len(to_json(dead)) < 100_000  # far under a broker's ~1 MB
