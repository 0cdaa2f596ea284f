"""The records StreamForge moves: readings and everything derived from them.

Every record is a slotted standard-library dataclass validated by pydantic 2
(through :func:`adapter`), not a ``BaseModel``: the hot path builds millions of
them per minute, and a slotted dataclass is built several times faster than a
model, while pydantic still validates
untrusted input, produces the JSON Schema (``schemas/json/``) and serialises.

Trusted code (the simulator, the operators) builds records directly;
untrusted input (payloads from devices) goes through
:func:`flows.decode.decode_payload`, which validates with these adapters.

>>> from datetime import datetime, timezone
>>> r = Reading(device="press-1", metric="temperature",
...             ts=datetime(2026, 1, 1, tzinfo=timezone.utc), value=71.5)
>>> to_json(r)[:43]
b'{"device":"press-1","metric":"temperature",'
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import AwareDatetime, ConfigDict, Field, TypeAdapter

from schemas import record_fields

Quality = Literal["good", "uncertain", "bad"]
"""OPC UA style quality of a value: good, uncertain (e.g. sensor drifting) or bad."""

SourceKind = Literal["mqtt", "modbus", "opcua", "http", "kafka", "simulator"]
"""Where a reading entered StreamForge."""

RecordKind = Literal["telemetry", "event", "alarm", "log"]
"""How a reading is classified (rules in ``PipelineConfig.classification``)."""

Severity = Literal["info", "warning", "major", "critical"]
"""Alarm severities, lowest first."""

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "major": 2, "critical": 3}

AlarmState = Literal["raised", "acknowledged", "shelved", "cleared"]
AlarmTransition = Literal[
    "raised", "escalated", "deescalated", "acknowledged", "shelved", "unshelved", "cleared"
]
AlarmKind = Literal["threshold", "anomaly", "device", "flood"]

Priority = Literal["low", "medium", "high"]
"""How soon an operator must act on an alarm (ISA-18.2), lowest first.

``high``: at once (minutes), the process is at risk; ``medium``: soon
(within about 30 minutes); ``low``: within the shift. Independent of
severity, which says how bad the condition is. During an alarm flood, raises
below the flood's ``hold_below`` priority are held back."""

PRIORITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
LogLevel = Literal["debug", "info", "warning", "error", "critical"]

Value = float | int | bool | str
"""A reading's value. JSON numbers stay int or float, ``true``/``false`` stay bool."""

Name = Annotated[str, Field(min_length=1, max_length=200)]
"""Tenant, device and metric names: non-empty, at most 200 characters."""

# Records reject unknown fields and NaN/inf; a reading with a typo in a field
# name is a dead letter, not a reading with a silently missing unit.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(slots=True)
class Reading:
    """One value of one metric of one device at one instant (event time, UTC)."""

    __pydantic_config__ = _STRICT

    device: Name
    metric: Name
    ts: AwareDatetime
    value: Value
    tenant: Name = "default"
    quality: Quality = "good"
    source: SourceKind = "simulator"
    unit: str | None = None
    attributes: dict[str, str] | None = None
    score: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """The anomaly score the flow's detector gave this value (0 normal .. 1 anomalous);
    None for values it does not score (non-numeric, bad quality, detector off).
    Set by the flow, not by sources."""

    def __reduce__(self) -> tuple[type[Reading], tuple[Any, ...]]:
        """Pickle as the constructor's arguments.

        Readings are pickled whenever they cross to another process (to the
        worker owning their series); a plain tuple of arguments dumps and
        loads faster than the dataclass default's dict of fields.
        """
        return (
            Reading,
            (
                self.device,
                self.metric,
                self.ts,
                self.value,
                self.tenant,
                self.quality,
                self.source,
                self.unit,
                self.attributes,
                self.score,
            ),
        )


@dataclass(slots=True)
class Event:
    """A discrete change of state of a (tenant, device, metric): previous -> value."""

    __pydantic_config__ = _STRICT

    tenant: Name
    device: Name
    metric: Name
    ts: AwareDatetime
    previous: Value | None
    value: Value
    source: SourceKind = "simulator"


@dataclass(slots=True)
class Alarm:
    """One transition of an alarm's lifecycle, carrying the alarm's full state.

    An alarm has one ``id`` from raise to clear; every transition (raised,
    escalated, deescalated, acknowledged, cleared) is emitted as a new record
    with ``seq`` incremented, so ``(id, seq)`` identifies a transition and
    sinks can upsert the current state by ``id``.
    """

    __pydantic_config__ = _STRICT

    id: str
    tenant: Name
    device: Name
    metric: Name
    rule: Name
    kind: AlarmKind
    severity: Severity
    state: AlarmState
    transition: AlarmTransition
    seq: int
    ts: AwareDatetime
    raised_at: AwareDatetime
    value: Value | None
    threshold: float | None
    message: str
    acknowledged_at: AwareDatetime | None = None
    acknowledged_by: str | None = None
    cleared_at: AwareDatetime | None = None
    comment: str | None = None
    priority: Priority = "medium"
    shelved_until: AwareDatetime | None = None
    """While ``state`` is ``shelved``: when it is unshelved by itself (event time)."""
    chattering: bool = False
    """Raised again and again (the rule's ``chatter``): one alarm stands for the stream."""


@dataclass(frozen=True, slots=True)
class AlarmAction:
    """An operator's acknowledgement or clear of an alarm, on its way to the alarm's tracker.

    The API stores the operator's transition as the alarm's next
    :class:`Alarm` record and publishes that record on the operator actions
    topic; the flow reads it back wrapped in an ``AlarmAction``, so that no
    step can mistake it for a transition the flow made itself (only the
    series step applies it, to the tracker of its rule). It travels with the
    readings of its series, hence the ``tenant``, ``device`` and ``metric``.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> ack = Alarm(id="a1", tenant="default", device="press-1", metric="temp", rule="hot",
    ...             kind="threshold", severity="major", state="acknowledged",
    ...             transition="acknowledged", seq=2, ts=t, raised_at=t, value=None,
    ...             threshold=90.0, message="temp above 90", acknowledged_by="ops")
    >>> action = AlarmAction(ack)
    >>> action.device, action.metric, action.transition
    ('press-1', 'temp', 'acknowledged')
    """

    record: Alarm
    """The operator's transition as the API stored it (``acknowledged`` or ``cleared``)."""

    @property
    def tenant(self) -> str:
        """The tenant of the alarm's series."""
        return self.record.tenant

    @property
    def device(self) -> str:
        """The device of the alarm's series."""
        return self.record.device

    @property
    def metric(self) -> str:
        """The metric of the alarm's series."""
        return self.record.metric

    @property
    def transition(self) -> AlarmTransition:
        """What the operator did: ``acknowledged``, ``shelved``, ``unshelved`` or ``cleared``."""
        return self.record.transition


@dataclass(slots=True)
class LogRecord:
    """A log line a device reported (a reading classified as ``log``)."""

    __pydantic_config__ = _STRICT

    tenant: Name
    device: Name
    ts: AwareDatetime
    level: LogLevel
    component: str
    message: str
    metric: str | None = None


@dataclass(slots=True)
class DeadLetter:
    """Input that could not become a reading, kept with the reason why.

    ``payload`` is the original payload as text; bytes that are not UTF-8 are
    kept as base64 and ``payload_encoding`` says so. ``origin`` says where it
    came from (an MQTT topic, ``topic/partition/offset`` for Kafka, a device).
    ``step`` names the step that rejected it (``decode``, ``rollup``, ...).

    A dead letter must always be writable, whatever arrived: a payload text
    longer than :attr:`payload_limit` bytes is cut to that size (a Kafka
    broker refuses messages over its limit, about 1 MB by default), and
    ``payload_size`` and ``payload_sha256`` then keep the original payload's
    size in bytes and its SHA-256:

    >>> from datetime import UTC, datetime
    >>> huge = DeadLetter(datetime.now(UTC), "mqtt", "payload too large", "x" * 100_000)
    >>> len(huge.payload), huge.payload_size, huge.payload_sha256[:12]
    (65536, 100000, 'd69e68988157')
    >>> DeadLetter(datetime.now(UTC), "mqtt", "bad", "small").payload_size is None
    True
    """

    __pydantic_config__ = _STRICT

    received_at: AwareDatetime
    source: SourceKind
    reason: str
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    origin: str | None = None
    step: str = "decode"
    tenant: str | None = None
    payload_size: int | None = None
    """The original payload's size in bytes, when ``payload`` was cut (else None)."""
    payload_sha256: str | None = None
    """The SHA-256 (hex) of the original payload's bytes, when ``payload`` was cut."""

    payload_limit: ClassVar[int] = 65536
    """Most bytes of payload text a dead letter keeps (``decode.dead_letter_payload_bytes``)."""

    def __post_init__(self) -> None:
        limit = type(self).payload_limit
        if len(self.payload) <= limit // 4:
            return  # (at most 4 bytes a character: surely within the limit)
        text = self.payload.encode("utf-8", "surrogatepass")
        if len(text) <= limit:
            return
        base64_text = self.payload_encoding == "base64"
        original = text
        if base64_text:
            with contextlib.suppress(binascii.Error):  # not base64 after all: its text then
                original = base64.b64decode(text, validate=False)
        self.payload_size = len(original)
        self.payload_sha256 = hashlib.sha256(original).hexdigest()
        # Cut on a character boundary (and on a base64 quantum): still valid text.
        cut = text[: limit - limit % 4] if base64_text else text[:limit]
        self.payload = cut.decode("utf-8", "ignore")


@dataclass(slots=True)
class Rollup:
    """Aggregates of one metric of one device over one event-time window.

    ``revision`` is 0 for the first emission of a window and grows by one for
    each correction caused by late data; sinks upsert on
    ``(tenant, device, metric, tier, window_start)``. ``var`` is the
    population variance of the window's values.
    """

    __pydantic_config__ = _STRICT

    tenant: Name
    device: Name
    metric: Name
    tier: str
    window_start: AwareDatetime
    window_end: AwareDatetime
    count: int
    min: float
    max: float
    sum: float
    mean: float
    var: float
    first: float
    last: float
    first_ts: AwareDatetime
    last_ts: AwareDatetime
    revision: int = 0


@dataclass(slots=True)
class AnomalyScore:
    """The anomaly score in [0, 1] of one telemetry value, from an online detector."""

    __pydantic_config__ = _STRICT

    tenant: Name
    device: Name
    metric: Name
    ts: AwareDatetime
    value: float
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    detector: str
    anomalous: bool = False


RECORD_TYPES: dict[str, type] = {
    "reading": Reading,
    "event": Event,
    "alarm": Alarm,
    "log_record": LogRecord,
    "dead_letter": DeadLetter,
    "rollup": Rollup,
    "anomaly_score": AnomalyScore,
}
"""Every record type by its schema name (the file name under ``schemas/json``)."""

SCHEMA_VERSION = 2
"""Version of the record schemas, sent with every Kafka message as a header.

2: alarms gained ``priority``, ``shelved_until`` and ``chattering``, the
state ``shelved``, the transitions ``shelved`` and ``unshelved`` and the
kind ``flood`` (alarm management); other records are as in 1."""


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(record_type: Any) -> TypeAdapter[Any]:
    """The cached pydantic ``TypeAdapter`` of a record type (built once per type: slow)."""
    cached = _ADAPTERS.get(record_type)
    if cached is None:
        cached = _ADAPTERS[record_type] = TypeAdapter(record_type)
    return cached


# The records a flow emits by the million go through orjson, from dicts of
# their fields in declaration order (schemas.record_fields): the same bytes as
# pydantic's dump_json (tests/unit/test_models.py checks it) in about a third
# of the time. Other records, and anything orjson refuses (a numpy float,
# say), go through pydantic.
FAST_JSON_FIELDS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Reading: record_fields.reading_fields,
    AnomalyScore: record_fields.score_fields,
    Rollup: record_fields.rollup_fields,
    LogRecord: record_fields.log_fields,
}
"""Per record type with a fast path: its fields as a dict for ``orjson.dumps``."""

JSON_OPTIONS = orjson.OPT_UTC_Z
"""The ``orjson.dumps`` options that match pydantic's output (UTC as ``Z``)."""


def to_json(record: Any) -> bytes:
    """Serialise a record to compact JSON bytes (timestamps as ISO 8601 UTC)."""
    as_dict = FAST_JSON_FIELDS.get(type(record))
    if as_dict is not None:
        try:
            return orjson.dumps(as_dict(record), option=JSON_OPTIONS)
        except orjson.JSONEncodeError:
            pass
    return adapter(type(record)).dump_json(record)


def to_dict(record: Any) -> dict[str, Any]:
    """A record as a JSON-compatible dict."""
    result: dict[str, Any] = adapter(type(record)).dump_python(record, mode="json")
    return result


def series_key(tenant: str, device: str, metric: str) -> str:
    """The key of one time series; keyed state and partitioning use it."""
    return f"{tenant}/{device}/{metric}"


def is_number(value: Any) -> bool:
    """True for int and float values, false for bool and str (bool is an int in Python)."""
    return type(value) is float or type(value) is int


def epoch_seconds(ts: datetime) -> float:
    """Seconds since the Unix epoch of an aware datetime."""
    return ts.timestamp()


@dataclass(slots=True)
class RawMessage:
    """An undecoded payload as a source received it; ``flows.decode`` turns it into readings.

    ``defaults`` fills fields the payload does not carry (for example
    ``device`` and ``metric`` taken from MQTT topic levels, or the
    ``tenant``). ``fmt`` says what the payload is: a JSON object, a JSON
    array of objects (a batch), a bare number (device and metric must then
    come from ``defaults``), or ``auto`` to accept any of them. ``ack`` is
    an optional callable a source attaches to acknowledge the message
    upstream once it has been taken (never called by the decoder itself).
    """

    payload: bytes
    source: SourceKind
    received_at: datetime
    origin: str | None = None
    defaults: dict[str, str] | None = None
    fmt: Literal["auto", "object", "array", "number"] = "auto"
