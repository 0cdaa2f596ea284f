"""Pure logic of the OPC UA source: conversions, deadband filters, backoff, hand-over, config."""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from asyncua import ua
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.opcua.config import OpcuaEndpointConfig, OpcuaSourceConfig
from connectors.opcua.convert import (
    ReadingTarget,
    backoff_delay,
    data_change_filter,
    event_time,
    is_server_overflow,
    quality_of,
    to_reading,
    to_value,
)
from connectors.opcua.handoff import BUFFER_FULL, HandoffBuffer
from connectors.opcua.source import OpcuaSource
from flows.config import load_pipeline_config
from schemas.models import Reading, adapter

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TARGET = ReadingTarget("t1", "press-1", "temperature", "degC")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_quality_follows_the_two_severity_bits(code: int) -> None:
    expected = {0: "good", 1: "uncertain", 2: "bad", 3: "bad"}[code >> 30]
    assert quality_of(ua.StatusCode(code)) == expected


def test_named_status_codes_map_to_quality() -> None:
    assert quality_of(ua.StatusCode(ua.StatusCodes.Good)) == "good"
    assert quality_of(ua.StatusCode(ua.StatusCodes.UncertainSensorNotAccurate)) == "uncertain"
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadCommunicationError)) == "bad"


def test_overflow_bit_needs_the_data_value_info_type() -> None:
    assert is_server_overflow(ua.StatusCode(0x00000480))
    assert is_server_overflow(ua.StatusCode(ua.StatusCodes.Good | 0x480))
    assert not is_server_overflow(ua.StatusCode(0x00000080))  # InfoType not DataValue
    assert not is_server_overflow(ua.StatusCode(ua.StatusCodes.Good))
    assert not is_server_overflow(None)


def test_event_time_prefers_source_then_server_then_receive_time() -> None:
    source, server = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    assert (
        event_time(ua.DataValue(1.0, SourceTimestamp=source, ServerTimestamp=server), T0) == source
    )
    assert event_time(ua.DataValue(1.0, ServerTimestamp=server), T0) == server
    assert event_time(ua.DataValue(1.0), T0) == T0
    # An empty OPC UA DateTime decodes to 1601-01-01: treated as missing.
    assert event_time(ua.DataValue(1.0, SourceTimestamp=datetime(1601, 1, 1, tzinfo=UTC)), T0) == T0
    naive = datetime(2026, 5, 1, 12, 0)
    assert event_time(ua.DataValue(1.0, SourceTimestamp=naive), T0) == naive.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (7, 7),
        (2.5, 2.5),
        (float("nan"), "nan"),
        (float("-inf"), "-inf"),
        ("text", "text"),
        (ua.LocalizedText("Running"), "Running"),
        (b"\x00\x01", "AAE="),
        (T0, "2026-01-01T00:00:00+00:00"),
        ([1, 2.5, True], "[1, 2.5, true]"),
        (ua.ServerState.Running, "Running"),
        (ua.NodeId(5, 2), str(ua.NodeId(5, 2))),
    ],
)
def test_values_become_float_int_bool_or_str(raw: object, expected: object) -> None:
    value = to_value(raw)
    assert value == expected
    assert type(value) is type(expected)


def test_missing_value_is_the_status_name() -> None:
    assert to_value(None, ua.StatusCode(ua.StatusCodes.BadSensorFailure)) == "BadSensorFailure"


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=20))
)
def test_every_reading_is_a_valid_record(raw: object) -> None:
    dv = ua.DataValue(ua.Variant(raw), SourceTimestamp=T0)
    reading = to_reading(dv, TARGET, received_at=T0)
    adapter(Reading).validate_python(reading)  # what the decoder would accept from a device
    assert (reading.tenant, reading.device, reading.metric, reading.unit) == (
        "t1",
        "press-1",
        "temperature",
        "degC",
    )


def test_bad_reading_keeps_its_status_name() -> None:
    dv = ua.DataValue(ua.Variant(1.5), ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue))
    r = to_reading(dv, TARGET, T0)
    assert (r.quality, r.value, r.attributes) == (
        "uncertain",
        1.5,
        {"status": "UncertainLastUsableValue"},
    )


def test_deadband_filters() -> None:
    assert data_change_filter("none", 5.0) is None
    absolute = data_change_filter("absolute", 0.5)
    assert absolute is not None
    assert (absolute.DeadbandType, absolute.DeadbandValue) == (ua.DeadbandType.Absolute, 0.5)
    assert absolute.Trigger == ua.DataChangeTrigger.StatusValue
    percent = data_change_filter("percent", 2.0)
    assert percent is not None and percent.DeadbandType == ua.DeadbandType.Percent


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 100), st.floats(0.01, 5), st.floats(5, 120), st.integers(0, 2**32))
def test_backoff_grows_and_stays_within_bounds(
    attempt: int, initial: float, maximum: float, seed: int
) -> None:
    delay = backoff_delay(attempt, initial, maximum, random.Random(seed))
    ceiling = min(maximum, initial * 2**attempt)
    assert ceiling / 2 <= delay <= ceiling


def test_handoff_waits_when_full_and_loses_nothing() -> None:
    buffer: HandoffBuffer[int] = HandoffBuffer(capacity=10, endpoint="unit-handoff")
    full_before = BUFFER_FULL.value(endpoint="unit-handoff")
    received: list[int] = []
    stop = threading.Event()

    def consumer() -> None:
        while not stop.is_set():
            time.sleep(0.02)
            received.extend(buffer.drain(3))

    async def producer() -> None:
        for start in range(0, 100, 5):
            await buffer.put(list(range(start, start + 5)))
            assert len(buffer) <= 10

    thread = threading.Thread(target=consumer)
    thread.start()
    asyncio.run(producer())
    while len(received) < 100:
        time.sleep(0.01)
    stop.set()
    thread.join()
    assert received == list(range(100))
    assert BUFFER_FULL.value(endpoint="unit-handoff") > full_before
    assert not buffer.waiting


def _endpoint(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "e",
        "url": "opc.tcp://h:4840",
        "nodes": [{"node_id": "ns=2;i=1", "device": "d", "metric": "m"}],
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        (
            _endpoint(nodes=[{"device": "d", "metric": "m"}]),
            "exactly one of node_id or browse_path",
        ),
        (
            _endpoint(
                nodes=[{"node_id": "i=1", "browse_path": "0:Server", "device": "d", "metric": "m"}]
            ),
            "exactly one of node_id or browse_path",
        ),
        (_endpoint(security_policy="Basic256Sha256"), "security_mode"),
        (_endpoint(security_policy="Basic256Sha256", security_mode="Sign"), "gen-cert"),
        (_endpoint(password="x"), "needs a username"),
        (_endpoint(url="http://h"), "opc"),
        (
            _endpoint(
                nodes=[
                    {
                        "node_id": "i=1",
                        "device": "d",
                        "metric": "m",
                        "deadband_type": "percent",
                        "deadband_value": 150,
                    }
                ]
            ),
            "between 0 and 100",
        ),
    ],
)
def test_config_rejects_inconsistent_endpoints(endpoint: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OpcuaEndpointConfig.model_validate(endpoint)


def test_config_rejects_duplicate_endpoint_names() -> None:
    with pytest.raises(ValidationError, match="unique"):
        OpcuaSourceConfig.model_validate({"endpoints": [_endpoint(), _endpoint()]})


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = OpcuaEndpointConfig.model_validate(_endpoint(username="u", password_env="OPCUA_TEST_PW"))
    with pytest.raises(ValueError, match="OPCUA_TEST_PW"):
        cfg.resolved_password()
    monkeypatch.setenv("OPCUA_TEST_PW", "s3cret")
    assert cfg.resolved_password() == "s3cret"


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"node_id": "garbage"}, "not an OPC UA node id"),
        ({"browse_path": "2:A/<bad"}, "not a browse path"),
    ],
)
def test_bad_node_addresses_fail_when_the_source_is_built(
    node: dict[str, str], message: str
) -> None:
    config = OpcuaSourceConfig.model_validate(
        {"endpoints": [_endpoint(nodes=[{**node, "device": "d", "metric": "m"}])]}
    )
    with pytest.raises(ValueError, match=message):
        OpcuaSource(config)


def test_nan_is_not_a_number_reading() -> None:
    r = to_reading(ua.DataValue(ua.Variant(math.nan), SourceTimestamp=T0), TARGET, T0)
    assert r.value == "nan"


SAMPLE = Path(__file__).parents[2] / "connectors" / "opcua" / "sample.yaml"


def test_the_documented_sample_is_a_valid_config() -> None:
    config = load_pipeline_config(SAMPLE, env={})
    source = config.sources[0]
    assert isinstance(source, OpcuaSourceConfig)
    OpcuaSource(source)  # every node address parses
    # The commented-out secured endpoint is valid too, once uncommented.
    lines = SAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "# - name: line2-secure" in line)
    block = "\n".join(line[len("      # ") :] for line in lines[start:])
    secure = OpcuaEndpointConfig.model_validate(yaml.safe_load(block)[0])
    assert (secure.security_policy, secure.security_mode) == ("Basic256Sha256", "SignAndEncrypt")
    assert secure.password_env == "OPCUA_LINE2_PASSWORD"
