"""Pure OPC UA -> StreamForge conversions: DataValue to Reading, deadband filters, backoff.

>>> from datetime import datetime, timezone
>>> from asyncua import ua
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> target = ReadingTarget("default", "press-1", "temperature", "degC")
>>> dv = ua.DataValue(ua.Variant(71.5, ua.VariantType.Double), SourceTimestamp=t)
>>> r = to_reading(dv, target, received_at=t)
>>> (r.device, r.metric, r.value, r.quality, r.source, r.ts == t)
('press-1', 'temperature', 71.5, 'good', 'opcua', True)

Nothing here touches the network, so the mapping rules are unit-tested
without a server: StatusCode severity to quality, which timestamp is the
event time, how OPC UA values become ``float | int | bool | str``.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from schemas.models import Quality, Reading, Value

# DateTime fields the server left empty decode to 1601-01-01 (the OPC UA epoch);
# anything before 1900 is treated as "no timestamp".
_NO_TIMESTAMP_BEFORE = datetime(1900, 1, 1, tzinfo=UTC)

_SEVERITY_MASK = 0xC0000000
_INFO_TYPE_DATA_VALUE = 0x00000400
_OVERFLOW_BIT = 0x00000080


@dataclass(frozen=True, slots=True)
class ReadingTarget:
    """Which series a node feeds: the fields of a Reading that come from config."""

    tenant: str
    device: str
    metric: str
    unit: str | None = None


def quality_of(status: ua.StatusCode | None) -> Quality:
    """Good -> ``good``, Uncertain -> ``uncertain``, Bad (and reserved 11) -> ``bad``."""
    if status is None:
        return "good"
    severity = status.value & _SEVERITY_MASK
    if severity == 0:
        return "good"
    if severity == 0x40000000:
        return "uncertain"
    return "bad"


def is_server_overflow(status: ua.StatusCode | None) -> bool:
    """True when the server dropped values from this item's queue (Part 4, 7.39 Overflow bit)."""
    if status is None:
        return False
    value = status.value
    return bool(value & _INFO_TYPE_DATA_VALUE) and bool(value & _OVERFLOW_BIT)


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts if ts >= _NO_TIMESTAMP_BEFORE else None


def event_time(dv: ua.DataValue, received_at: datetime) -> datetime:
    """The source timestamp, else the server timestamp, else the time we received the value."""
    return _aware(dv.SourceTimestamp) or _aware(dv.ServerTimestamp) or received_at


def to_value(raw: Any, status: ua.StatusCode | None = None) -> Value:
    """An OPC UA value as ``float | int | bool | str``.

    Booleans stay bool, integers int, finite floats float. NaN and infinities
    become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (StreamForge records
    reject non-finite numbers). Text is kept; LocalizedText gives its text;
    bytes become base64; date-times ISO 8601; enums their name; arrays and
    structures JSON text where possible, else ``str()``. A missing value
    (typical with a Bad status) becomes the status name, e.g.
    ``"BadSensorFailure"``, so the reading still says why it has no number.
    """
    if raw is None:
        return status.name if status is not None else "null"
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, enum.Enum):
        return str(raw.name)
    if isinstance(raw, int):
        return int(raw)
    if isinstance(raw, float):
        return float(raw) if math.isfinite(raw) else str(raw)
    if isinstance(raw, str):
        return raw
    if isinstance(raw, ua.LocalizedText):
        return raw.Text or ""
    if isinstance(raw, bytes | bytearray):
        return base64.b64encode(bytes(raw)).decode("ascii")
    if isinstance(raw, datetime):
        return raw.isoformat()
    if isinstance(raw, list | tuple):
        try:
            return json.dumps([to_value(v) for v in raw])
        except (TypeError, ValueError):
            return str(raw)
    if isinstance(raw, uuid.UUID):
        return str(raw)
    return str(raw)


def to_reading(dv: ua.DataValue, target: ReadingTarget, received_at: datetime) -> Reading:
    """One Reading from one DataValue of a configured node.

    Non-good values carry ``attributes={"status": <StatusCode name>}`` so the
    exact OPC UA reason is kept next to the coarse quality.
    """
    status = dv.StatusCode_
    quality = quality_of(status)
    raw = dv.Value.Value if dv.Value is not None else None
    return Reading(
        device=target.device,
        metric=target.metric,
        ts=event_time(dv, received_at),
        value=to_value(raw, status),
        tenant=target.tenant,
        quality=quality,
        source="opcua",
        unit=target.unit,
        attributes=None if quality == "good" or status is None else {"status": status.name},
    )


def data_change_filter(deadband_type: str, deadband_value: float) -> ua.DataChangeFilter | None:
    """The monitored item filter for a deadband, or None for no deadband.

    The trigger is StatusValue: a change of status (Good -> Bad) is always
    reported, a change of value only beyond the deadband.
    """
    if deadband_type == "none":
        return None
    kinds = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}
    flt = ua.DataChangeFilter()
    flt.Trigger = ua.DataChangeTrigger.StatusValue
    flt.DeadbandType = kinds[deadband_type]
    flt.DeadbandValue = float(deadband_value)
    return flt


def backoff_delay(
    attempt: int, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): exponential, capped, jittered.

    The ceiling doubles from ``initial`` up to ``maximum``; the delay is drawn
    from [ceiling/2, ceiling] so many clients restarted together spread out.
    """
    ceiling = min(maximum, initial * (2 ** min(attempt, 32)))
    return ceiling * (0.5 + 0.5 * (rng or random).random())
