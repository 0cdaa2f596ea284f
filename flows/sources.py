"""Build the Bytewax input of each configured source.

Connectors are imported only when a config uses them, so a flow that reads
the simulator does not load asyncua or pymodbus.
"""

from __future__ import annotations

from typing import Any

from bytewax.inputs import Source

from schemas.config import PipelineConfig, SourceConfig
from schemas.settings import Settings


def make_source(
    config: SourceConfig, pipeline: PipelineConfig, settings: Settings | None = None
) -> Source[Any]:
    """The Bytewax source for one source config (emits ``Reading`` or ``RawMessage``)."""
    settings = settings or Settings()
    if config.type == "simulator":
        from connectors.simulator import SimulatorSource

        return SimulatorSource(config)
    if config.type == "mqtt":
        from connectors.mqtt import MqttSource

        return MqttSource(config, settings)
    if config.type == "modbus":
        from connectors.modbus import ModbusSource

        return ModbusSource(config)
    if config.type == "opcua":
        from connectors.opcua import OpcuaSource

        return OpcuaSource(config)
    if config.type == "kafka":
        from connectors.kafka_source import KafkaRawSource

        return KafkaRawSource(config, settings)
    raise ValueError(f"unknown source type {config.type!r}")
