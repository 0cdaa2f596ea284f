"""The configuration models of the pipeline's steps: decode, classify, alarm, roll up, score.

They are the parts of :class:`flows.config.PipelineConfig` that are not a
source or a sink (each connector has its own config model in its folder).
Every model forbids unknown fields, so a typo is an error, not a default:

>>> rule = ThresholdAlarmRule(name="hot", metric="temp*", levels={"major": 90})
>>> rule.direction, rule.clear_at
('above', None)
>>> ClassificationRule(metric="door", kind="event", colour="red")
Traceback (most recent call last):
    ...
pydantic_core._pydantic_core.ValidationError: 1 validation error for ClassificationRule
colour
  Extra inputs are not permitted [type=extra_forbidden, input_value='red', input_type=str]
    ...
"""

from __future__ import annotations

import fnmatch
import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.devices import DeviceInfo, DeviceSelector
from schemas.durations import parse_duration
from schemas.models import Priority, RecordKind, Severity


class Strict(BaseModel):
    """A config model that rejects unknown fields."""

    model_config = ConfigDict(extra="forbid")


class DecodeConfig(Strict):
    """Limits applied where payloads enter (see ``flows/decode.py``)."""

    max_payload_bytes: int = Field(
        2 * 1024 * 1024, ge=1, description="Larger payloads are dead letters."
    )
    max_batch_items: int = Field(10_000, ge=1, description="Most readings in one JSON array.")
    dead_letter_payload_bytes: int = Field(
        65_536,
        ge=1024,
        le=900_000,
        description="Most bytes of payload a dead letter keeps; longer ones are cut, with the "
        "original size and SHA-256 recorded (under the ~1 MB a Kafka broker takes by default).",
    )
    max_future_skew_s: float = Field(
        300.0, ge=0.0, description="Timestamps further ahead of the clock are dead letters."
    )
    default_tenant: str = Field("default", min_length=1)


class ClassificationRule(DeviceSelector, Strict):
    """Readings whose metric (and device) match these globs get ``kind``.

    Rules are tried in order; the first match wins. Readings no rule matches
    are telemetry when numeric and events otherwise (bool and str states).
    ``device_type``, ``area`` and ``tags`` select devices by their registry
    entry (:class:`schemas.devices.DeviceSelector`).
    """

    metric: str = "*"
    device: str = "*"
    kind: RecordKind

    def matches(self, device: str, metric: str, info: DeviceInfo | None = None) -> bool:
        """Whether this rule applies to a series (of a device with this registry entry)."""
        return (
            fnmatch.fnmatchcase(metric, self.metric)
            and fnmatch.fnmatchcase(device, self.device)
            and self.selects(info)
        )


def default_classification() -> list[ClassificationRule]:
    return [
        ClassificationRule(metric="log.*", kind="log"),
        ClassificationRule(metric="alarm.*", kind="alarm"),
        ClassificationRule(metric="state.*", kind="event"),
    ]


class SuppressionConfig(Strict):
    """When a rule raises no alarm: ISA-18.2 state-based suppression.

    The device's run state is its ``alarm_management.running_metric`` series
    (a reading whose value is true, a non-zero number or a string like
    ``on``/``running`` means running). A device that never sent one is
    neither stopped nor starting. Suppression only holds back *new* raises:
    an alarm already active still escalates, de-escalates and clears. A
    suppressed anomaly rule also keeps its detector from learning while the
    machine is stopped or another alarm is active (not the normal to learn);
    a start-up is learned, so that a recurring start becomes normal.
    """

    while_stopped: bool = Field(False, description="while the device's run state is off")
    after_start: float = Field(
        0.0, ge=0.0, description="seconds (event time) after the run state turns on"
    )
    while_other_alarm: bool = Field(
        False,
        description="while another threshold or device alarm of the same device is active",
    )

    @field_validator("after_start", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    def any(self) -> bool:
        """Whether any condition is set."""
        return self.while_stopped or self.after_start > 0 or self.while_other_alarm


class ChatterConfig(Strict):
    """A chattering alarm: ``raises`` raises of one rule on one series within ``window``.

    From that raise on, the alarm is marked ``chattering`` and its clear is
    held until the condition has stayed clear for ``window``; raises in the
    meantime continue the same alarm. One alarm stands for the stream.
    """

    raises: int = Field(3, ge=2)
    window: float = Field(60.0, gt=0.0, description="seconds (event time)")

    @field_validator("window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class ThresholdAlarmRule(DeviceSelector, Strict):
    """A threshold alarm with severity levels, hysteresis and a minimum duration.

    ``direction: above`` raises when the value reaches a level's threshold
    (``levels: {warning: 80, critical: 95}``) and clears only once the value
    is back below ``clear_at`` (default: the lowest threshold), so a value
    hovering at the threshold does not flap. ``min_duration`` is how long
    (event time) the condition must hold before the alarm is raised. While
    raised, a higher level escalates and a lower one de-escalates the *same*
    alarm. ``direction: below`` mirrors all of this. ``device_type``,
    ``area`` and ``tags`` select devices by their registry entry
    (:class:`schemas.devices.DeviceSelector`), besides the ``device`` glob.
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
    priority: Priority = "medium"
    suppression: SuppressionConfig = Field(default_factory=SuppressionConfig)
    chatter: ChatterConfig | None = Field(
        default_factory=ChatterConfig, description="null: never collapse repeated raises"
    )

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

    def matches(self, device: str, metric: str, info: DeviceInfo | None = None) -> bool:
        """Whether this rule watches a series (of a device with this registry entry).

        >>> from schemas.devices import DeviceInfo
        >>> rule = ThresholdAlarmRule(name="hot", metric="temp", device_type="press",
        ...                           levels={"major": 90})
        >>> rule.matches("p-1", "temp", DeviceInfo("default", "p-1", type="press"))
        True
        >>> rule.matches("p-1", "temp"), rule.matches("p-1", "temp", DeviceInfo("default", "p-1"))
        (False, False)
        """
        return (
            fnmatch.fnmatchcase(metric, self.metric)
            and fnmatch.fnmatchcase(device, self.device)
            and self.selects(info)
        )


def default_alarm_rules() -> list[ThresholdAlarmRule]:
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


class RollupConfig(Strict):
    """Event-time rollups of telemetry (see ``flows/kernels/rollups.py``).

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


class DetectorConfig(Strict):
    """Which online anomaly detector scores telemetry (see ``flows/anomaly.py``).

    ``type: default`` is StreamForge's own cheap robust detector; the others
    wrap river's detectors with small parameters. ``params`` go to the
    detector's constructor.
    """

    type: Literal["default", "halfspacetrees", "gaussian", "zscore"] = "default"
    params: dict[str, Any] = Field(default_factory=dict)


class AnomalyConfig(Strict):
    """Online anomaly detection of telemetry and the anomaly alarms it raises.

    An anomaly alarm is raised when ``hold`` consecutive scores are at least
    ``threshold``, or at once by a single score of at least
    ``instant_threshold`` (a one-value spike can never last ``hold`` values),
    and cleared when ``clear_hold`` consecutive scores are below
    ``clear_threshold``.

    Duplicates (ISA-18.2 rationalization: one condition, one alarm): on a
    series that threshold rules watch, the abnormal values that raise an
    anomaly alarm are often the excursion a threshold alarm annunciates
    seconds later (or has just cleared). Such a raise is held for
    ``duplicate_window`` of event time and dropped when a threshold alarm of
    the same series is active within that window before or after it
    (``streamforge_anomaly_duplicates_total``); otherwise it is passed on
    then, with its own time. Series without threshold rules are not held.

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
    priority: Priority = "low"
    suppression: SuppressionConfig = Field(
        default_factory=lambda: SuppressionConfig(
            while_stopped=True, after_start=120.0, while_other_alarm=True
        ),
        description="a start, a stop or another alarm of the device raises no anomaly alarm",
    )
    chatter: ChatterConfig | None = Field(default_factory=ChatterConfig)
    duplicate_window: float = Field(
        60.0,
        ge=0.0,
        description="seconds (event time): an anomaly raise on a series that threshold rules "
        "watch is held this long, and dropped as a duplicate when a threshold alarm of the "
        "series is active within this time before or after it; 0: never held",
    )
    emit_scores: bool = Field(
        False,
        description="also emit a separate AnomalyScore record per telemetry value "
        "(every reading carries its score in any case)",
    )

    @field_validator("duplicate_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _check(self) -> AnomalyConfig:
        if self.clear_threshold > self.threshold:
            raise ValueError("clear_threshold must be <= threshold")
        if self.instant_threshold < self.threshold:
            raise ValueError("instant_threshold must be >= threshold")
        return self


class FloodConfig(Strict):
    """An alarm flood (EEMUA 191): more than ``raises`` raises within ``window``.

    Counted per tenant and area (``AlarmManagementConfig.areas``). A flood
    raises one alarm (kind and rule ``flood``, device the area, metric
    ``alarms``, priority ``high``); while it lasts, raises below
    ``hold_below`` priority are held back. It ends once the raises within
    ``window`` are ``end_at`` or fewer: the flood alarm clears with a summary,
    held alarms still active are released (their records, in order), and
    those that came and went during the flood are counted in the summary only.
    """

    enabled: bool = True
    raises: int = Field(10, ge=1)
    window: float = Field(600.0, gt=0.0, description="seconds (event time)")
    end_at: int = Field(5, ge=0)
    hold_below: Priority = "medium"
    severity: Severity = "major"

    @field_validator("window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _check(self) -> FloodConfig:
        if self.end_at >= self.raises:
            raise ValueError("end_at must be below raises")
        return self


class AlarmManagementConfig(Strict):
    """Alarm management across rules (ISA-18.2 / EEMUA 191); per-rule parts live on the rules.

    ``running_metric``: the metric of a device's run state, what state-based
    suppression looks at. ``areas``: area name -> device glob, first match
    wins, for flood counting (devices no glob matches are in area ``plant``);
    a device's area in the registry comes first.
    ``device_alarm_priority``: the priority of alarms a device reports itself.
    (How long operators may shelve an alarm is the API's setting,
    ``STREAMFORGE_API_MAX_SHELVE_MINUTES``.)
    """

    running_metric: str = Field("state.running", min_length=1)
    areas: dict[str, str] = Field(default_factory=dict)
    flood: FloodConfig = Field(default_factory=FloodConfig)
    device_alarm_priority: Priority = "medium"

    def area_of(self, device: str, info: DeviceInfo | None = None) -> str:
        """A device's area: its registry entry's, else the first matching glob's, else ``plant``.

        >>> from schemas.devices import DeviceInfo
        >>> management = AlarmManagementConfig(areas={"north": "n-*"})
        >>> registered = DeviceInfo("default", "n-2", area="south")
        >>> management.area_of("n-press-1"), management.area_of("n-2", registered)
        ('north', 'south')
        """
        if info is not None and info.area:
            return info.area
        for area, pattern in self.areas.items():
            if fnmatch.fnmatchcase(device, pattern):
                return area
        return "plant"


class OperatorActionsConfig(Strict):
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


class ConfigError(ValueError):
    """A pipeline config that cannot be used; the message names fields and problems."""


def format_validation_error(error: ValidationError, origin: str) -> str:
    """One readable message listing each bad field (dotted path) and its problem."""
    problems = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        problems.append(f"{path}: {item['msg']}")
    return f"invalid pipeline config {origin}: " + "; ".join(problems)
