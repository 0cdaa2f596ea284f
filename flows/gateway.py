"""The edge gateway dataflow: protocol sources -> decode -> a spool on disk -> the raw Kafka topic.

Run it beside the devices, with a pipeline config whose ``topology`` is
``split``; ``flows.ingest`` (anywhere Kafka is reachable) then reads the
gateway's topic instead of the sources::

    STREAMFORGE_CONFIG=deploy/pipeline.demo.yaml python -m bytewax.run flows.gateway -s 1

The shape of the flow::

    input(s) ─► decode ─┬─► readings: JSON arrays per device ─┬─► spool (disk) ─► Kafka
                        └─► dead letters ─────────────────────┘    gateway.topic

Every source of the config but Kafka topics runs here (simulator, MQTT,
Modbus, OPC UA). Readings are validated here, as in ``flows.ingest``, so a
bad payload becomes a dead letter at the edge, with its reason, and travels
on the same topic (header ``kind: dead_letter``), keyed like the readings;
``flows.ingest`` turns it back into the dead letter it was. Readings go as
JSON arrays of one device's readings (``gateway.readings_per_message`` at
most), keyed ``tenant/device``, with the sources' own timestamps, and the
header ``gateway`` naming the gateway. What the spool does while Kafka is
away, and its guarantees: :mod:`connectors.kafka.gateway`.

Built from a config in a test, with a sink that collects what would be spooled:

>>> from bytewax.testing import TestingSink, run_main
>>> from connectors.kafka.gateway import unspool
>>> config = PipelineConfig(topology="split", sources=[{"type": "simulator", "devices": 2,
...     "rate": 0, "limit": 10, "start": "2026-01-01T00:00:00Z"}])
>>> out = []
>>> run_main(build_gateway_flow(config, sink=TestingSink(out)))
>>> messages = [unspool(m) for _key, chunk in out for m in chunk]
>>> sorted((key, kind) for topic, key, kind, _value in messages if topic == "streamforge.raw")
[(b'default/dev-000', 'readings'), (b'default/dev-001', 'readings')]
"""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.kafka.gateway import GatewayItem, SpoolSink, gateway_id, spooled
from connectors.runtime.compiled import compiled_modules
from connectors.runtime.logs import get_logger
from connectors.runtime.outputs import RoutedOutput
from connectors.runtime.registry import build_source
from flows.config import PipelineConfig
from flows.ingest import start_process
from flows.operators import decode
from schemas.config import ConfigError
from schemas.models import DeadLetter, Reading, to_json
from schemas.settings import Settings

log = get_logger("flows.gateway")


class ReadingsEncoder:
    """A chunk of readings -> one spooled message per device (and per ``limit`` readings)."""

    def __init__(self, topic: str, limit: int) -> None:
        self.topic = topic
        self.limit = limit

    def __call__(self, item: tuple[str, list[Any]]) -> GatewayItem:
        bucket, chunk = item
        by_device: dict[tuple[str, str], list[bytes]] = {}
        for reading in chunk:
            if type(reading) is not Reading:
                continue  # (operators' actions: only flows.ingest reads those)
            by_device.setdefault((reading.tenant, reading.device), []).append(to_json(reading))
        messages: list[bytes] = []
        topic, limit = self.topic, self.limit
        for (tenant, device), values in by_device.items():
            key = f"{tenant}/{device}".encode()
            for start in range(0, len(values), limit):
                value = b"[" + b",".join(values[start : start + limit]) + b"]"
                messages.append(spooled(topic, key, "readings", value))
        return bucket, messages


class DeadLettersEncoder:
    """Routed dead letters -> spooled messages on the raw topic, keyed like the readings."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def __call__(self, item: RoutedOutput) -> GatewayItem:
        _key, (_kind, letters) = item
        messages = []
        for letter in letters:
            assert type(letter) is DeadLetter
            key = f"{letter.tenant or 'default'}/{letter.origin or letter.source}".encode()
            messages.append(spooled(self.topic, key, "dead_letter", to_json(letter)))
        return "dead_letter", messages


def build_gateway_flow(
    config: PipelineConfig,
    settings: Settings | None = None,
    *,
    sources: list[Source[Any]] | None = None,
    sink: Sink[Any] | None = None,
    flow_id: str = "streamforge-gateway",
) -> Dataflow:
    """Build the gateway dataflow for a pipeline config.

    ``sources`` replace the configured ones (default: :meth:`PipelineConfig.gateway_sources`),
    ``sink`` the spool (tests collect ``(key, [spooled message, ...])`` items).
    """
    settings = settings or Settings()
    DeadLetter.payload_limit = config.decode.dead_letter_payload_bytes
    flow = Dataflow(flow_id)
    if sources is None:
        sources = [build_source(s, settings) for s in config.gateway_sources()]
    inputs = [op.input(f"in_{i}", flow, src) for i, src in enumerate(sources)]
    raw: Stream[Any] = inputs[0] if len(inputs) == 1 else op.merge("inputs", *inputs)
    decoded = decode("decode", raw, config.decode, config.series_buckets)
    gateway = config.gateway
    readings = op.map(
        "encode", decoded.readings, ReadingsEncoder(gateway.topic, gateway.readings_per_message)
    )
    dead = op.map("encode_dead", decoded.dead_letters, DeadLettersEncoder(gateway.topic))
    messages = op.merge("messages", readings, dead)
    op.output("spool", messages, sink if sink is not None else SpoolSink(gateway, settings))
    return flow


def _check_split(config: PipelineConfig) -> None:
    if config.topology != "split":
        raise ConfigError(
            "topology: the gateway runs with topology: split (this config is combined: "
            "flows.ingest runs the sources itself)"
        )
    if not config.gateway_sources():
        raise ConfigError("sources: the gateway needs a source other than a Kafka topic")


def gateway_from_environment() -> Dataflow:
    """The flow ``python -m bytewax.run flows.gateway`` runs: config from the environment."""
    config = start_process(_check_split)
    flow = build_gateway_flow(config)
    log.info(
        "gateway config loaded",
        extra={
            "step": "start",
            "gateway": gateway_id(config.gateway),
            "sources": [s.type for s in config.gateway_sources()],
            "topic": config.gateway.topic,
            "spool": config.gateway.spool.path,
            "compiled_modules": compiled_modules(),
        },
    )
    return flow


def __getattr__(name: str) -> Any:
    # Built on first access, as flows.ingest's: importing reads no environment.
    if name == "flow":
        built = gateway_from_environment()
        globals()["flow"] = built
        return built
    raise AttributeError(name)
