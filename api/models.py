"""Response (and request) models of the REST API, with the examples OpenAPI shows.

>>> Page[ReadingOut](items=[], next_cursor=None).model_dump()
{'items': [], 'next_cursor': None}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from api.params import StorableText
from schemas.devices import MetricSpec

T = TypeVar("T")

_TS = "2026-01-01T00:00:00Z"


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """One page of a keyset-paginated list; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[T]
    next_cursor: str | None = Field(
        None, description="Opaque cursor of the next page; null on the last page."
    )


class LastValue(BaseModel):
    """A metric's newest stored value (a reading, or an event's new state)."""

    value: Any = Field(description="A number, boolean or text (an event's value: any JSON).")
    ts: datetime
    unit: str | None = Field(
        None, description="The registered unit of the metric when given, else the reading's."
    )
    in_range: bool | None = Field(
        None,
        description="Within the registered [min, max] of the metric; null when it has no range "
        "or the value is not a number.",
    )


class DeviceOut(_Out):
    """A device of the caller's tenant: its registration, what it sends and its state."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "device": "press-1",
                "name": "Press 1, hall north",
                "type": "press",
                "area": "north",
                "tags": ["line-1"],
                "metric_specs": {"temperature": {"unit": "degC", "min": 0, "max": 120}},
                "registration": "registered",
                "status": "online",
                "last_seen": _TS,
                "metrics": ["pressure", "temperature"],
                "event_metrics": ["state.mode"],
                "last_values": {
                    "temperature": {"value": 71.5, "ts": _TS, "unit": "degC", "in_range": True},
                    "pressure": {"value": 3.2, "ts": _TS, "unit": "bar", "in_range": None},
                },
                "active_alarms": 1,
                "revision": 3,
                "registered_at": "2025-12-01T08:00:00Z",
                "registered_by": "sfk_1a2b3c4d",
                "updated_at": "2025-12-20T10:00:00Z",
                "updated_by": "sfk_1a2b3c4d",
                "decommissioned_at": None,
                "decommission_reason": None,
            }
        }
    )

    device: str
    name: str | None = Field(None, description="Registered display name.")
    type: str | None = Field(None, description="Registered device type.")
    area: str | None = Field(None, description="Registered area.")
    tags: list[str] = Field(default_factory=list, description="Registered tags, sorted.")
    metric_specs: dict[str, MetricSpec] = Field(
        default_factory=dict, description="Registered metrics: unit and normal range."
    )
    registration: Literal["registered", "discovered", "decommissioned"] = Field(
        "discovered",
        description="registered (active), decommissioned, or discovered: seen in the stored "
        "data but never registered.",
    )
    status: Literal["online", "stale", "offline", "unknown"] = Field(
        "unknown",
        description="By the age of last_seen: online up to STREAMFORGE_CONSOLE_ONLINE_S (60), "
        "stale up to STREAMFORGE_CONSOLE_OFFLINE_S (900), offline beyond; unknown when "
        "nothing was ever stored from it.",
    )
    last_seen: datetime | None = Field(
        description="Time of its newest stored reading, event, log line or alarm signal."
    )
    metrics: list[str] = Field(description="Metrics it has readings of, sorted.")
    event_metrics: list[str] = Field(
        default_factory=list, description="Metrics it has events of, sorted."
    )
    last_values: dict[str, LastValue] = Field(
        default_factory=dict, description="The newest value of each metric it has readings or "
        "events of (the newer of the two when a metric has both).",
    )  # fmt: skip
    active_alarms: int = Field(description="Alarms raised or acknowledged, not yet cleared.")
    revision: int | None = Field(None, description="Grows with each change of the registration.")
    registered_at: datetime | None = None
    registered_by: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    decommissioned_at: datetime | None = None
    decommission_reason: str | None = None


class DecommissionIn(BaseModel):
    """Why a device is decommissioned (optional)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"reason": "replaced by press-7"}}
    )

    reason: StorableText | None = Field(None, max_length=2000)


class ImportResult(BaseModel):
    """What a bulk import did: devices new, changed, and already registered as given."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"created": 120, "updated": 3, "unchanged": 877}}
    )

    created: int
    updated: int
    unchanged: int


class ImportProblemOut(BaseModel):
    """One reason a row of an import was refused."""

    line: int | None = Field(description="CSV line (the header is line 1); null for YAML/JSON.")
    index: int | None = Field(description="Position in the YAML/JSON list (from 0); null for CSV.")
    device: str | None
    field: str
    message: str


class ImportRejectedOut(BaseModel):
    """A refused import (nothing was written): why, and every bad row."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "message": "1 of 2 devices are invalid; nothing was imported",
                "errors": [
                    {"line": 3, "index": None, "device": "pump-2", "field": "metrics",
                     "message": "temperature: min 'cold' is not a number"}
                ],
            }
        }
    )  # fmt: skip

    message: str
    errors: list[ImportProblemOut]


class DevicePolicyIn(BaseModel):
    """What flows do with readings of devices nobody registered."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"unregistered": "reject"}}
    )

    unregistered: Literal["accept", "reject"] = Field(
        description="accept: processed, and the device is listed as discovered; reject: "
        "dead letters (step registry)."
    )


class DevicePolicyOut(DevicePolicyIn):
    """The tenant's policy for unregistered devices (accept when it never set one)."""

    updated_at: datetime | None = None
    updated_by: str | None = None


class ReadingOut(_Out):
    """One stored reading (telemetry)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "device": "press-1",
                "metric": "temperature",
                "ts": _TS,
                "value": 71.5,
                "quality": "good",
                "source": "mqtt",
                "unit": "degC",
                "score": 0.12,
            }
        }
    )

    device: str
    metric: str
    ts: datetime
    value: float | bool | str | None
    quality: str
    source: str
    unit: str | None = None
    score: float | None = Field(
        None, description="Anomaly score, 0 (normal) to 1; null if the value was not scored."
    )


class RollupOut(_Out):
    """Aggregates of one window (a stored tier, or coarser buckets merged from one)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "device": "press-1",
                "metric": "temperature",
                "tier": "5m",
                "window_start": _TS,
                "window_end": "2026-01-01T00:05:00Z",
                "count": 300,
                "min": 70.1,
                "max": 73.9,
                "sum": 21450.0,
                "mean": 71.5,
                "first": 70.4,
                "last": 72.2,
            }
        }
    )

    device: str
    metric: str
    tier: str = Field(description="The stored tier, or the requested interval when re-bucketed.")
    window_start: datetime
    window_end: datetime
    count: int
    min: float
    max: float
    sum: float
    mean: float
    first: float | None = None
    last: float | None = None


class EventOut(_Out):
    """A discrete change of state of a device's metric."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "device": "press-1",
                "metric": "state.mode",
                "ts": _TS,
                "previous": "idle",
                "value": "running",
                "source": "opcua",
            }
        }
    )

    device: str
    metric: str
    ts: datetime
    previous: Any = None
    value: Any
    source: str


_ALARM_EXAMPLE: dict[str, Any] = {
    "id": "0f0e9c1e-54b5-5c4e-a3a4-8d0a4b9b4c11",
    "device": "press-1",
    "metric": "temperature",
    "rule": "high_temperature",
    "kind": "threshold",
    "severity": "warning",
    "state": "acknowledged",
    "transition": "acknowledged",
    "seq": 2,
    "ts": "2026-01-01T00:01:00Z",
    "raised_at": _TS,
    "value": 82.0,
    "threshold": 80.0,
    "message": "temperature 82.0 >= 80.0 (warning)",
    "acknowledged_at": "2026-01-01T00:01:00Z",
    "acknowledged_by": "alice",
    "cleared_at": None,
    "comment": "checking the pump",
}


class AlarmOut(_Out):
    """An alarm's current state (its latest transition)."""

    model_config = ConfigDict(json_schema_extra={"example": _ALARM_EXAMPLE})

    id: str
    device: str
    metric: str
    rule: str
    kind: str
    severity: str
    state: str
    transition: str
    seq: int
    ts: datetime
    raised_at: datetime
    value: Any = None
    threshold: float | None = None
    message: str
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    cleared_at: datetime | None = None
    comment: str | None = None
    priority: str = "medium"
    shelved_until: datetime | None = None
    chattering: bool = False


class AlarmDetail(AlarmOut):
    """An alarm with every transition it went through, oldest first."""

    transitions: list[AlarmOut]


class AcknowledgeIn(BaseModel):
    """Who acknowledges (default: the caller's key id or token subject) and why."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"by": "alice", "comment": "on it"}}
    )

    by: StorableText | None = Field(None, min_length=1, max_length=200)
    comment: StorableText | None = Field(None, max_length=2000)


class ClearIn(AcknowledgeIn):
    """Who clears the alarm by hand and why."""


class ShelveIn(AcknowledgeIn):
    """Shelve an alarm for ``minutes`` (at most the API's ``max_shelve``), with a reason."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"minutes": 60, "comment": "sensor being replaced"}},
    )

    minutes: float = Field(gt=0, description="How long; the alarm comes back by itself after.")
    comment: StorableText = Field(min_length=1, max_length=2000, description="Why (required).")


class RankedCount(BaseModel):
    """A name and how many raises it had."""

    name: str
    raises: int


class AlarmKpis(BaseModel):
    """Alarm KPIs of ``[start, end)`` (EEMUA 191 / ISA-18.2 benchmarks in the README)."""

    start: datetime
    end: datetime
    raises: int = Field(description="Alarms raised (floods not counted).")
    raises_per_hour: float
    raises_per_10_minutes_avg: float
    peak_per_10_minutes: int = Field(description="Most raises in one 10-minute bucket.")
    floods: int = Field(description="Flood alarms raised.")
    active: int = Field(description="Alarms raised or acknowledged now (not shelved).")
    shelved: int = Field(description="Alarms shelved now.")
    standing: int = Field(description="Active now and raised more than 24 hours ago.")
    chattering: int = Field(description="Alarms marked chattering, raised in the range.")
    top_rules: list[RankedCount]
    top_devices: list[RankedCount]


class IngestRejected(BaseModel):
    """One item of an ingest request that did not become a reading."""

    index: int | None = Field(
        description="Position in the request's array; null for the whole body."
    )
    reason: str


class IngestResult(BaseModel):
    """How many readings were accepted (written to Kafka) and why the others were not."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "accepted": 1,
                "rejected": 1,
                "errors": [{"index": 1, "reason": "value: must be a finite number"}],
            }
        }
    )

    accepted: int
    rejected: int
    errors: list[IngestRejected]


class Health(BaseModel):
    """Liveness or readiness, with the state of each dependency."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class ApiKeyOut(_Out):
    """An API key's public part (the key itself is shown only once, at creation)."""

    id: str
    tenant: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    """A new key: ``key`` is shown now and never again (only its hash is stored)."""

    key: str


class ApiKeyIn(BaseModel):
    """A key to create in the caller's tenant."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["viewer", "operator", "admin"]
    name: StorableText = Field("", max_length=200)
