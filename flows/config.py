"""The pipeline configuration: what a flow reads, how it classifies and what it writes.

A flow is built from one validated :class:`PipelineConfig`: the sources and
sinks (each connector's own config model, picked by its ``type``) and the
step configs of :mod:`schemas.config`. It is loaded from the YAML file named
by ``STREAMFORGE_CONFIG`` (or the built-in default when unset), then
environment variables override single fields with
``STREAMFORGE_PIPELINE__<FIELD>__<SUBFIELD>=value`` (values are parsed as
YAML, so ``STREAMFORGE_PIPELINE__ANOMALY__THRESHOLD=0.95`` is a float):

>>> config = load_pipeline_config(env={})      # the built-in default
>>> [s.type for s in config.sources], [s.type for s in config.sinks]
(['simulator'], ['stdout'])
>>> load_pipeline_config(env={"STREAMFORGE_PIPELINE__ANOMALY__THRESHOLD": "0.95"}).anomaly.threshold
0.95

A wrong config raises :class:`schemas.config.ConfigError` with one message
naming each bad field and the problem, and the flow does not start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from connectors.kafka.gateway_config import GatewayConfig
from connectors.kafka.sink_config import KafkaSinkConfig
from connectors.kafka.source_config import KafkaSourceConfig
from connectors.modbus.config import ModbusSourceConfig
from connectors.mqtt.config import MqttSourceConfig
from connectors.opcua.config import OpcuaSourceConfig
from connectors.simulator.config import SimulatorSourceConfig
from connectors.stdout.config import NullSinkConfig, StdoutSinkConfig
from connectors.timescale.config import DeviceRegistryConfig, TimescaleSinkConfig
from schemas.config import (
    AlarmManagementConfig,
    AnomalyConfig,
    ClassificationRule,
    ConfigError,
    DecodeConfig,
    OperatorActionsConfig,
    RollupConfig,
    Strict,
    ThresholdAlarmRule,
    default_alarm_rules,
    default_classification,
    format_validation_error,
)
from schemas.durations import parse_duration

ENV_PREFIX = "STREAMFORGE_PIPELINE__"

SourceConfig = Annotated[
    SimulatorSourceConfig
    | MqttSourceConfig
    | ModbusSourceConfig
    | OpcuaSourceConfig
    | KafkaSourceConfig,
    Field(discriminator="type"),
]
"""Any source's config, told apart by its ``type``."""

SinkConfig = Annotated[
    StdoutSinkConfig | NullSinkConfig | KafkaSinkConfig | TimescaleSinkConfig,
    Field(discriminator="type"),
]
"""Any sink's config, told apart by its ``type``."""


def _default_sources() -> list[SourceConfig]:
    return [SimulatorSourceConfig()]


def _default_sinks() -> list[SinkConfig]:
    return [StdoutSinkConfig()]


class PipelineConfig(Strict):
    """Everything one flow does, from sources to sinks. Defaults run anywhere."""

    tenant: str = Field("default", min_length=1, description="tenant of readings without one")
    topology: Literal["combined", "split"] = Field(
        "combined",
        description="combined: flows.ingest runs the sources itself; split: flows.gateway runs "
        "them and writes their readings to gateway.topic (spooled on disk while Kafka is "
        "unreachable), and flows.ingest reads that topic",
    )
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    sources: list[SourceConfig] = Field(default_factory=_default_sources, min_length=1)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    classification: list[ClassificationRule] = Field(default_factory=default_classification)
    alarms: list[ThresholdAlarmRule] = Field(default_factory=default_alarm_rules)
    rollups: RollupConfig = Field(default_factory=RollupConfig)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    alarm_management: AlarmManagementConfig = Field(default_factory=AlarmManagementConfig)
    operator_actions: OperatorActionsConfig = Field(default_factory=OperatorActionsConfig)
    sinks: list[SinkConfig] = Field(default_factory=_default_sinks, min_length=1)
    registry: DeviceRegistryConfig = Field(default_factory=DeviceRegistryConfig)
    series_ttl: float = Field(
        7 * 86400.0,
        ge=0.0,
        description="seconds of event time without a reading after which a series' state "
        "(alarms, windows, detector) expires: its windows are emitted, its active alarms "
        "cleared, and it leaves the snapshots; 0 = never",
    )
    series_buckets: int = Field(
        64,
        ge=1,
        le=65536,
        description="keys of the per-series step; devices (all the series of one) are spread "
        "over workers by bucket. Changing it breaks resuming from an existing recovery store.",
    )

    @field_validator("series_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineConfig:
        for what, names in (
            ("sources", [s.name for s in self.sources]),
            ("alarms", [a.name for a in self.alarms]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what}: duplicate names {dupes}")
        if self.operator_actions.enabled is True and self.finite():
            raise ValueError(
                "operator_actions.enabled: true needs a source that runs continuously "
                "(the actions topic never ends, so the flow would not either)"
            )
        return self

    def finite(self) -> bool:
        """Whether every source of ``flows.ingest`` ends by itself (a replay, a test)."""
        return all(
            (s.type == "kafka" and s.stop_at_end) or (s.type == "simulator" and s.limit is not None)
            for s in self.ingest_sources()
        )

    def gateway_sources(self) -> list[SourceConfig]:
        """The sources ``flows.gateway`` runs (split topology): all but Kafka topics."""
        return [s for s in self.sources if s.type != "kafka"]

    def ingest_sources(self) -> list[SourceConfig]:
        """The sources ``flows.ingest`` runs.

        Combined topology: all of them. Split: the gateways' raw topic in
        place of the protocol sources, and the configured Kafka topics.

        >>> split = PipelineConfig(topology="split", gateway={"topic": "plant.raw"})
        >>> [(s.type, s.name, s.topic) for s in split.ingest_sources()]
        [('kafka', 'gateway', 'plant.raw')]
        """
        if self.topology == "combined":
            return list(self.sources)
        gateway = self.gateway
        raw = KafkaSourceConfig(
            name="gateway",
            topic=gateway.topic,
            bootstrap_servers=gateway.bootstrap_servers,
            partitions=gateway.partitions,
            retention=gateway.retention,
        )
        return [raw, *(s for s in self.sources if s.type == "kafka")]

    def follows_operator_actions(self) -> bool:
        """Whether the flow reads operators' alarm actions (``operator_actions.enabled``).

        ``auto``: when the flow has a Kafka sink and runs continuously (the
        actions topic never ends, so a finite flow following it would not).
        """
        enabled = self.operator_actions.enabled
        if enabled == "auto":
            return any(s.type == "kafka" for s in self.sinks) and not self.finite()
        return bool(enabled)

    def registry_database_url(self, default: str) -> str | None:
        """The database the flow reads the device registry from, or None: no registry.

        ``registry.source: auto`` reads it from the TimescaleDB sink's
        database when there is one; ``default`` is ``STREAMFORGE_DATABASE_URL``.

        >>> PipelineConfig().registry_database_url("postgresql://db") is None
        True
        >>> PipelineConfig(sinks=[{"type": "timescale"}]).registry_database_url("postgresql://db")
        'postgresql://db'
        """
        registry = self.registry
        if registry.source == "none":
            return None
        sink = next((s for s in self.sinks if s.type == "timescale"), None)
        if registry.source == "auto" and sink is None:
            return None
        sink_url = sink.database_url if isinstance(sink, TimescaleSinkConfig) else None
        return registry.database_url or sink_url or default


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Nested dict from ``STREAMFORGE_PIPELINE__A__B=value`` variables (values parsed as YAML)."""
    result: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw)
    return result


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_pipeline_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> PipelineConfig:
    """Load and validate the pipeline config.

    ``path`` defaults to ``$STREAMFORGE_CONFIG``; with neither, the built-in
    default (simulator -> stdout). ``STREAMFORGE_PIPELINE__...`` variables in
    ``env`` (default ``os.environ``) override fields. Raises :class:`ConfigError`.
    """
    env = os.environ if env is None else env
    path = path or env.get("STREAMFORGE_CONFIG") or None
    data: dict[str, Any] = {}
    origin = "(built-in default)"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read pipeline config {origin}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise ConfigError(
                f"pipeline config {origin} is not valid YAML{at}: {problem}"
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"pipeline config {origin} must be a YAML mapping at the top level")
        data = loaded
    overrides = _env_overrides(env)
    if overrides:
        data = _merge(data, overrides)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None
