"""The pipeline configuration: what a flow reads, how it classifies and what it writes.

A flow is built from one validated :class:`PipelineConfig`. It is loaded from
the YAML file named by ``STREAMFORGE_CONFIG`` (or the built-in default when
unset), then environment variables override single fields with
``STREAMFORGE_PIPELINE__<FIELD>__<SUBFIELD>=value`` (values are parsed as YAML,
so ``STREAMFORGE_PIPELINE__ANOMALY__THRESHOLD=0.95`` is a float)::

    from schemas.config import load_pipeline_config
    config = load_pipeline_config()          # default: simulator -> stdout

A wrong config raises :class:`ConfigError` with one message naming each bad
field and the problem, and the flow does not start.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.durations import parse_duration
from schemas.models import RecordKind, Severity
from schemas.sinks import SinkConfig, StdoutSinkConfig
from schemas.sources.kafka import KafkaSourceConfig
from schemas.sources.modbus import ModbusSourceConfig
from schemas.sources.mqtt import MqttSourceConfig
from schemas.sources.opcua import OpcuaSourceConfig
from schemas.sources.simulator import SimulatorSourceConfig

ENV_PREFIX = "STREAMFORGE_PIPELINE__"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


SourceConfig = Annotated[
    SimulatorSourceConfig
    | MqttSourceConfig
    | ModbusSourceConfig
    | OpcuaSourceConfig
    | KafkaSourceConfig,
    Field(discriminator="type"),
]


class DecodeConfig(_Strict):
    """Limits applied where payloads enter (see ``flows/decode.py``)."""

    max_payload_bytes: int = Field(
        2 * 1024 * 1024, ge=1, description="Larger payloads are dead letters."
    )
    max_batch_items: int = Field(10_000, ge=1, description="Most readings in one JSON array.")
    max_future_skew_s: float = Field(
        300.0, ge=0.0, description="Timestamps further ahead of the clock are dead letters."
    )
    default_tenant: str = Field("default", min_length=1)


class ClassificationRule(_Strict):
    """Readings whose metric (and device) match these globs get ``kind``.

    Rules are tried in order; the first match wins. Readings no rule matches
    are telemetry when numeric and events otherwise (bool and str states).
    """

    metric: str = "*"
    device: str = "*"
    kind: RecordKind

    def matches(self, device: str, metric: str) -> bool:
        """Whether this rule applies to a series."""
        return fnmatch.fnmatchcase(metric, self.metric) and fnmatch.fnmatchcase(device, self.device)


def _default_classification() -> list[ClassificationRule]:
    return [
        ClassificationRule(metric="log.*", kind="log"),
        ClassificationRule(metric="alarm.*", kind="alarm"),
        ClassificationRule(metric="state.*", kind="event"),
    ]


class ThresholdAlarmRule(_Strict):
    """A threshold alarm with severity levels, hysteresis and a minimum duration.

    ``direction: above`` raises when the value reaches a level's threshold
    (``levels: {warning: 80, critical: 95}``) and clears only once the value
    is back below ``clear_at`` (default: the lowest threshold), so a value
    hovering at the threshold does not flap. ``min_duration`` is how long
    (event time) the condition must hold before the alarm is raised. While
    raised, a higher level escalates and a lower one de-escalates the *same*
    alarm. ``direction: below`` mirrors all of this.
    """

    name: str = Field(min_length=1, max_length=200)
    metric: str = Field(min_length=1, description="glob over metric names")
    device: str = Field("*", description="glob over device names")
    direction: Literal["above", "below"] = "above"
    levels: dict[Severity, float] = Field(min_length=1)
    clear_at: float | None = None
    min_duration: float = Field(0.0, ge=0.0, description="seconds, or a duration string")
    manual_clear: bool = Field(False, description="operators may clear it through the API")
    message: str = "{metric} {value} {op} {threshold} ({severity})"

    @field_validator("min_duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _check_levels(self) -> ThresholdAlarmRule:
        from schemas.models import SEVERITY_RANK

        ordered = sorted(self.levels.items(), key=lambda kv: SEVERITY_RANK[kv[0]])
        thresholds = [t for _, t in ordered]
        increasing = all(a < b for a, b in itertools.pairwise(thresholds))
        decreasing = all(a > b for a, b in itertools.pairwise(thresholds))
        if self.direction == "above" and not increasing:
            raise ValueError("levels must have higher thresholds for higher severities")
        if self.direction == "below" and not decreasing:
            raise ValueError("levels must have lower thresholds for higher severities")
        lowest = thresholds[0]
        if self.clear_at is not None:
            if self.direction == "above" and self.clear_at > lowest:
                raise ValueError(f"clear_at {self.clear_at} must be <= lowest threshold {lowest}")
            if self.direction == "below" and self.clear_at < lowest:
                raise ValueError(f"clear_at {self.clear_at} must be >= lowest threshold {lowest}")
        return self

    def matches(self, device: str, metric: str) -> bool:
        """Whether this rule watches a series."""
        return fnmatch.fnmatchcase(metric, self.metric) and fnmatch.fnmatchcase(device, self.device)


def _default_alarm_rules() -> list[ThresholdAlarmRule]:
    # Matches the simulator's temperature metric so the default flow shows alarms.
    return [
        ThresholdAlarmRule(
            name="high_temperature",
            metric="temperature",
            levels={"warning": 80.0, "critical": 95.0},
            clear_at=75.0,
            min_duration=3.0,
        )
    ]


class RollupConfig(_Strict):
    """Event-time rollups of telemetry (see ``flows/rollups.py``).

    Windows are tumbling and aligned to the Unix epoch. Each coarser window
    must be a whole multiple of the finest one. The watermark of a series is
    its highest event time minus ``watermark_delay``; a window is emitted
    once the watermark passes its end. A value for an already emitted window
    arriving within ``allowed_lateness`` after that window's end re-emits the
    window as a correction (``revision + 1``); a later value is a dead letter
    with reason ``late``. After ``idle_timeout`` of wall-clock time without
    data a series' open windows are emitted anyway.
    """

    enabled: bool = True
    windows: list[str] = Field(default_factory=lambda: ["1m", "5m", "1h"], min_length=1)
    watermark_delay: float = Field(5.0, ge=0.0)
    allowed_lateness: float = Field(300.0, ge=0.0)
    idle_timeout: float = Field(60.0, gt=0.0)

    @field_validator("watermark_delay", "allowed_lateness", "idle_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, windows: list[str]) -> list[str]:
        seconds = [parse_duration(w) for w in windows]
        finest = min(seconds)
        for name, length in zip(windows, seconds, strict=True):
            if length <= 0:
                raise ValueError(f"window {name!r} must be longer than zero")
            ratio = length / finest
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"window {name!r} is not a whole multiple of the finest window")
        if len(set(seconds)) != len(seconds):
            raise ValueError("windows must be distinct")
        return windows

    def window_seconds(self) -> list[tuple[str, float]]:
        """(tier name, length in seconds) per window, finest first."""
        return sorted(((w, parse_duration(w)) for w in self.windows), key=lambda t: t[1])


class DetectorConfig(_Strict):
    """Which online anomaly detector scores telemetry (see ``flows/anomaly.py``).

    ``type: default`` is StreamForge's own cheap robust detector; the others
    wrap river's detectors with small parameters. ``params`` go to the
    detector's constructor.
    """

    type: Literal["default", "halfspacetrees", "gaussian", "zscore"] = "default"
    params: dict[str, Any] = Field(default_factory=dict)


class AnomalyConfig(_Strict):
    """Online anomaly detection of telemetry and the anomaly alarms it raises.

    An anomaly alarm is raised when ``hold`` consecutive scores are at least
    ``threshold``, or at once by a single score of at least
    ``instant_threshold`` (a one-value spike can never last ``hold`` values),
    and cleared when ``clear_hold`` consecutive scores are below
    ``clear_threshold``.

    Every scored telemetry reading carries its score (``score`` in its
    record, the ``readings.score`` column). ``emit_scores: true`` also emits
    a separate :class:`~schemas.models.AnomalyScore` record per value (the
    ``anomaly_scores`` topic and table, with the detector's name and the
    ``anomalous`` flag), which doubles the records a flow writes.
    """

    enabled: bool = True
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    threshold: float = Field(0.9, gt=0.0, le=1.0)
    clear_threshold: float = Field(0.5, ge=0.0, le=1.0)
    hold: int = Field(2, ge=1)
    instant_threshold: float = Field(0.99, gt=0.0, le=1.0)
    clear_hold: int = Field(5, ge=1)
    severity: Severity = "warning"
    emit_scores: bool = Field(
        False,
        description="also emit a separate AnomalyScore record per telemetry value "
        "(every reading carries its score in any case)",
    )

    @model_validator(mode="after")
    def _check(self) -> AnomalyConfig:
        if self.clear_threshold > self.threshold:
            raise ValueError("clear_threshold must be <= threshold")
        if self.instant_threshold < self.threshold:
            raise ValueError("instant_threshold must be >= threshold")
        return self


class OperatorActionsConfig(_Strict):
    """Operators' alarm acknowledgements and manual clears, followed by the flow.

    The API stores an operator's action as the alarm's next transition
    (``seq`` + 1) and also writes it to ``topic``. A flow that follows the
    topic applies the action to the alarm it tracks, so its own next
    transition of that alarm gets the following ``seq`` and keeps the
    acknowledgement (see :mod:`flows.alarm_lifecycle`). ``enabled``:
    ``auto`` follows the topic when the flow has a Kafka sink (the stack
    the API runs with) and runs continuously (not when every source ends by
    itself: the topic does not, so the flow would never end); ``true``
    always (a continuous flow); ``false`` never.
    """

    enabled: Literal["auto"] | bool = "auto"
    topic: str = Field("streamforge.alarm_actions", min_length=1, max_length=249)
    bootstrap_servers: str | None = Field(
        None, description="null = STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS"
    )


def _default_sources() -> list[SourceConfig]:
    return [SimulatorSourceConfig()]


def _default_sinks() -> list[SinkConfig]:
    return [StdoutSinkConfig()]


class PipelineConfig(_Strict):
    """Everything one flow does, from sources to sinks. Defaults run anywhere."""

    tenant: str = Field("default", min_length=1, description="tenant of readings without one")
    sources: list[SourceConfig] = Field(default_factory=_default_sources, min_length=1)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    classification: list[ClassificationRule] = Field(default_factory=_default_classification)
    alarms: list[ThresholdAlarmRule] = Field(default_factory=_default_alarm_rules)
    rollups: RollupConfig = Field(default_factory=RollupConfig)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    operator_actions: OperatorActionsConfig = Field(default_factory=OperatorActionsConfig)
    sinks: list[SinkConfig] = Field(default_factory=_default_sinks, min_length=1)
    series_buckets: int = Field(
        64,
        ge=1,
        le=65536,
        description="keys of the per-series step; series are spread over workers by bucket. "
        "Changing it breaks resuming from an existing recovery store.",
    )

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
        """Whether every source ends by itself (a replay, a test, a benchmark)."""
        return all(
            (s.type == "kafka" and s.stop_at_end) or (s.type == "simulator" and s.limit is not None)
            for s in self.sources
        )

    def follows_operator_actions(self) -> bool:
        """Whether the flow reads operators' alarm actions (``operator_actions.enabled``).

        ``auto``: when the flow has a Kafka sink and runs continuously (the
        actions topic never ends, so a finite flow following it would not).
        """
        enabled = self.operator_actions.enabled
        if enabled == "auto":
            return any(s.type == "kafka" for s in self.sinks) and not self.finite()
        return bool(enabled)


class ConfigError(ValueError):
    """A pipeline config that cannot be used; the message names fields and problems."""


def format_validation_error(error: ValidationError, origin: str) -> str:
    """One readable message listing each bad field (dotted path) and its problem."""
    problems = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        problems.append(f"{path}: {item['msg']}")
    return f"invalid pipeline config {origin}: " + "; ".join(problems)


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
