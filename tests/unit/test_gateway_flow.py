"""The gateway's pure parts: encoding readings and dead letters, the topology choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from connectors.kafka.gateway import SpoolSink, spooled, unspool
from connectors.kafka.gateway_config import GatewayConfig
from connectors.kafka.source import _dead_letter
from flows.config import PipelineConfig
from flows.decode import decode_payload
from flows.gateway import DeadLettersEncoder, ReadingsEncoder, gateway_from_environment
from schemas.config import DecodeConfig
from schemas.models import DeadLetter, RawMessage, Reading, to_json

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _reading(device: str, i: int, tenant: str = "default") -> Reading:
    return Reading(device, "temperature", T0 + timedelta(seconds=i), float(i), tenant=tenant)


def test_readings_go_as_one_array_per_device_and_limit_and_decode_back_unchanged() -> None:
    chunk = [_reading("a", i) for i in range(5)] + [_reading("b", 0, tenant="t2")]
    bucket, messages = ReadingsEncoder("raw", limit=2)(("7", chunk))
    assert bucket == "7"
    decoded = [unspool(m) for m in messages]
    assert [(key, kind) for _topic, key, kind, _value in decoded] == [
        (b"default/a", "readings")
    ] * 3 + [(b"t2/b", "readings")]
    assert [len(orjson.loads(value)) for *_rest, value in decoded] == [2, 2, 1, 1]
    back: list[Reading] = []
    for *_rest, value in decoded:
        raw = RawMessage(payload=value, source="kafka", received_at=T0)
        readings, dead = decode_payload(raw, DecodeConfig())
        assert dead == []
        back.extend(readings)
    # what the ingest flow reads is what the gateway took (the source kind becomes kafka)
    assert [(r.tenant, r.device, r.ts, r.value) for r in back] == [
        (r.tenant, r.device, r.ts, r.value) for r in chunk
    ]


def test_a_dead_letter_from_a_gateway_is_read_back_as_that_dead_letter() -> None:
    letter = DeadLetter(T0, "mqtt", "value: must be a number", "oops", origin="plant/x/y")
    _key, messages = DeadLettersEncoder("raw")(("dead_letter", ("dead_letter", [letter])))
    topic, key, kind, value = unspool(messages[0])
    assert (topic, key, kind) == ("raw", b"default/plant/x/y", "dead_letter")
    assert _dead_letter(value) == letter
    assert _dead_letter(b'{"device": "not a dead letter"}') is None


def test_a_key_that_is_not_utf8_survives_the_spool_format() -> None:
    record = spooled("t", b"\xff\xfe", "readings", b"[]")
    assert unspool(record) == ("t", b"\xff\xfe", "readings", b"[]")


def test_devices_keep_their_spool_partition() -> None:
    sink = SpoolSink(GatewayConfig(spool_partitions=4))
    assert sink.list_parts() == ["0", "1", "2", "3"]
    assert [sink.part_fn(k) % 4 for k in ("0", "5", "63", "dead_letter")] == [0, 1, 3, 0]


def test_split_topology_reads_the_gateway_topic_and_keeps_configured_kafka_sources() -> None:
    config = PipelineConfig(
        topology="split",
        gateway={"topic": "edge.raw"},
        sources=[
            {"type": "mqtt", "subscriptions": [{"topic": "p/{device}/{metric}"}]},
            {"type": "kafka", "name": "other", "topic": "other.raw"},
        ],
    )
    assert [s.type for s in config.gateway_sources()] == ["mqtt"]
    assert [(s.name, s.topic) for s in config.ingest_sources()] == [
        ("gateway", "edge.raw"),
        ("other", "other.raw"),
    ]
    assert not config.finite()


def test_the_gateway_refuses_a_combined_config_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "combined.yaml"
    path.write_text("sources: [{type: simulator}]\n")
    monkeypatch.setenv("STREAMFORGE_CONFIG", str(path))
    monkeypatch.setenv("STREAMFORGE_METRICS_PORT", "off")
    # what the process-wide start-up would change in this test process
    for name in ("tune_gc", "stop_on_signals", "serve_metrics_from_environment"):
        monkeypatch.setattr(f"flows.ingest.{name}", lambda: None)
    with pytest.raises(SystemExit) as stopped:
        gateway_from_environment()
    assert stopped.value.code == 2
    assert "topology: the gateway runs with topology: split" in capsys.readouterr().err


def test_to_json_of_a_reading_is_what_the_encoder_joins() -> None:
    reading = _reading("a", 1)
    _bucket, messages = ReadingsEncoder("raw", limit=10)(("0", [reading]))
    assert unspool(messages[0])[3] == b"[" + to_json(reading) + b"]"
