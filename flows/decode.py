"""Decode raw payloads into readings; whatever cannot be decoded becomes a dead letter.

>>> from datetime import datetime, timezone
>>> from schemas.config import DecodeConfig
>>> from schemas.models import RawMessage
>>> raw = RawMessage(
...     payload=b'[{"metric": "temperature", "value": 71.5, "ts": "2026-01-01T00:00:00Z"},'
...     b' {"metric": "pressure", "value": NaN}]',
...     source="mqtt", received_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
...     origin="plant/press-1", defaults={"device": "press-1"})
>>> readings, dead = decode_payload(raw, DecodeConfig())
>>> [(r.device, r.metric, r.value) for r in readings]
[('press-1', 'temperature', 71.5)]
>>> dead[0].reason
'item 1: value: must be a finite number (NaN and infinity are not allowed)'

:func:`decode_payload` never raises: every input yields readings, dead
letters or both, so a bad payload cannot abort a dataflow.

What a payload may be (``RawMessage.fmt`` narrows it; ``auto`` takes all):

* a JSON object -- one reading, fields as :class:`schemas.models.Reading`;
* a JSON array of objects -- a batch; each bad item becomes its own dead
  letter (reason ``item <index from 0>: ...``, payload the item's JSON) and
  the good items still pass; an empty array is one dead letter, and so is an
  array longer than ``max_batch_items``;
* a bare JSON scalar -- a number (or, with ``fmt: auto``, ``true``/``false``
  or a quoted string); device and metric must come from ``raw.defaults``.

Fields:

* ``raw.defaults`` fills ``device``, ``metric``, ``tenant``, ``unit`` and
  ``quality`` when the payload lacks them (or sends ``null``); the payload
  wins when it has them. Other keys of ``defaults`` are ignored. ``tenant``
  falls back to ``DecodeConfig.default_tenant``.
* ``source`` is always ``raw.source``: the connector knows where a payload
  came from, the payload does not get to choose. A ``source`` field in a
  payload is accepted (readings re-read from Kafka carry one) and ignored.
* ``ts`` is optional; without it (or ``null``) a reading takes
  ``raw.received_at``. It may be an ISO 8601 string with a UTC offset or
  ``Z`` (a string without one is a dead letter), or a Unix epoch number,
  also as a numeric string. Epoch units are detected by magnitude:
  ``|x| < 1e11`` seconds, ``< 1e14`` milliseconds, ``< 1e17`` microseconds,
  otherwise nanoseconds (each unit's range starts in 1973). Timestamps are
  normalised to UTC (``datetime.timezone.utc``). A timestamp more than
  ``max_future_skew_s`` ahead of ``now`` is a dead letter; old ones pass.
* Unknown fields, NaN, infinity and values that are not a number, bool or
  string are dead letters. Payloads that are not UTF-8 are kept base64 in
  the dead letter (``payload_encoding="base64"``).

Speed: the payload is validated in one ``TypeAdapter.validate_json`` call
(pydantic's Rust JSON parser); only when that fails is it parsed again and
validated item by item to find which items are bad. ``ts`` is parsed with
``datetime.fromisoformat`` rather than by pydantic, because pydantic's
``TzInfo`` makes every later comparison and ``timestamp()`` ~3-10x slower.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Required

import pydantic_core
from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

# pydantic needs typing_extensions.TypedDict before Python 3.12.
from typing_extensions import TypedDict

from connectors.runtime.logs import get_logger
from schemas.config import DecodeConfig
from schemas.decode_reasons import (
    describe_errors,
    item_text,
    json_reason,
    json_type,
    number_text,
    parse_timestamp,
    payload_text,
    short,
)
from schemas.models import DeadLetter, Name, Quality, RawMessage, Reading, Value

__all__ = ["decode_many", "decode_payload"]

_log = get_logger("flows.decode")

_QUALITIES = frozenset(("good", "uncertain", "bad"))
_NAME_MAX = 200
_JSON_WS = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
_NO_NOTES: dict[str, str] = {}
_fromisoformat = datetime.fromisoformat

_Clock = tuple[datetime, datetime, float]
"""(now, now + max_future_skew_s, max_future_skew_s): read once per call or batch."""


def _clock(config: DecodeConfig, now: datetime | None) -> _Clock:
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    skew = config.max_future_skew_s
    return now, now + _seconds(skew), skew


@functools.lru_cache(maxsize=64)
def _seconds(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@with_config(ConfigDict(extra="forbid", allow_inf_nan=False))
class _Item(TypedDict, total=False):
    """One reading as a payload carries it: like Reading, but most fields optional."""

    device: Name | None
    metric: Name | None
    # Parsed by parse_timestamp, not pydantic (see the module docstring).
    ts: Any
    value: Required[Value]
    tenant: Name | None
    quality: Quality | None
    # Accepted and ignored: the connector sets the source, the flow the score
    # (so a flow's own telemetry records can be fed to another flow).
    source: Any
    score: Any
    unit: str | None
    attributes: dict[str, str] | None


_ITEM: TypeAdapter[_Item] = TypeAdapter(_Item)
_ITEMS: TypeAdapter[list[_Item]] = TypeAdapter(list[_Item])
# The core validators directly: TypeAdapter's wrapper adds ~0.5 us per call.
_validate_item_json = _ITEM.validator.validate_json
_validate_items_json = _ITEMS.validator.validate_json
_validate_item = _ITEM.validator.validate_python


class _Context:
    """What one message's items share: defaults, source and the clock."""

    __slots__ = (
        "device",
        "limit",
        "metric",
        "notes",
        "now",
        "quality",
        "raw",
        "received_at",
        "skew",
        "source",
        "tenant",
        "unit",
    )

    def __init__(self, raw: RawMessage, config: DecodeConfig, clock: _Clock) -> None:
        self.raw = raw
        self.source = raw.source
        received = raw.received_at
        self.received_at = received if received.tzinfo is not None else received.replace(tzinfo=UTC)
        self.now, self.limit, self.skew = clock
        self.device: str | None = None
        self.metric: str | None = None
        self.unit: str | None = None
        self.tenant = config.default_tenant
        # None makes items without their own quality dead letters (reason in notes).
        self.quality: str | None = "good"
        self.notes = _NO_NOTES
        if raw.defaults:
            self._apply_defaults(raw.defaults)

    def _apply_defaults(self, defaults: dict[str, str]) -> None:
        self.notes = {}
        self.device = self._name(defaults, "device")
        self.metric = self._name(defaults, "metric")
        self.tenant = self._name(defaults, "tenant") or self.tenant
        unit = defaults.get("unit")
        self.unit = unit if isinstance(unit, str) and unit else None
        quality = defaults.get("quality", "good")
        if quality not in _QUALITIES:
            self.notes["quality"] = f"default quality {short(quality)} is not good/uncertain/bad"
            self.quality = None

    def _name(self, defaults: dict[str, str], field: str) -> str | None:
        value = defaults.get(field)
        if value is None:
            return None
        if isinstance(value, str) and 0 < len(value) <= _NAME_MAX:
            return value
        self.notes[field] = f"default {field} {short(value)} is not a valid name"
        return None

    def missing(self, field: str) -> str:
        note = self.notes.get(field)
        return f"missing field {field}" + (f" ({note})" if note else "")

    def future(self, ts: datetime) -> str:
        ahead = (ts - self.now).total_seconds()
        return (
            f"ts {ts.isoformat().replace('+00:00', 'Z')} is {number_text(ahead)} s in the future"
            f" (max_future_skew_s {number_text(self.skew)})"
        )

    def read(self, item: Mapping[str, Any]) -> Reading | str:
        """The reading of one validated item, or the reason it cannot be one."""
        get = item.get
        device = get("device") or self.device
        if device is None:
            return self.missing("device")
        metric = get("metric") or self.metric
        if metric is None:
            return self.missing("metric")
        ts: Any = get("ts")
        if ts is None:
            ts = self.received_at
        else:
            if type(ts) is str:
                try:
                    ts = _fromisoformat(ts)
                except ValueError:
                    ts = parse_timestamp(ts)  # numeric strings, or the reason it is not a time
                else:
                    if ts.tzinfo is not UTC:
                        ts = parse_timestamp(get("ts"))  # naive or another offset
            else:
                ts = parse_timestamp(ts)
            if type(ts) is str:
                return ts
            if ts > self.limit:
                return self.future(ts)
        quality: Any = get("quality") or self.quality
        if quality is None:
            return f"quality: {self.notes['quality']}"
        return Reading(
            device,
            metric,
            ts,
            item["value"],
            get("tenant") or self.tenant,
            quality,
            self.source,
            get("unit") or self.unit,
            get("attributes"),
        )

    def dead(self, reason: str, payload: bytes | None = None, item: Any = None) -> DeadLetter:
        """A dead letter of the whole payload, or of one array item when ``item`` is given."""
        text, encoding = item_text(item) if payload is None else payload_text(payload)
        tenant = self.tenant
        if isinstance(item, dict):
            item_tenant = item.get("tenant")
            if isinstance(item_tenant, str) and 0 < len(item_tenant) <= _NAME_MAX:
                tenant = item_tenant
        return DeadLetter(
            received_at=self.received_at,
            source=self.raw.source,
            reason=reason,
            payload=text,
            payload_encoding=encoding,
            origin=self.raw.origin,
            step="decode",
            tenant=tenant,
        )


def _shape(payload: bytes) -> str:
    """'object', 'array' or 'scalar' from the first non-blank byte (no parsing)."""
    first = payload[:1]
    if first == b"{":
        return "object"
    if first == b"[":
        return "array"
    first = payload.lstrip(_JSON_WS)[:1]
    return "object" if first == b"{" else "array" if first == b"[" else "scalar"


_SHAPE_NAMES = {"object": "a JSON object", "array": "a JSON array", "scalar": "a bare value"}
_FMT_NAMES = {
    "object": "a JSON object",
    "array": "a JSON array of objects",
    "number": "a bare number",
}


def decode_payload(
    raw: RawMessage, config: DecodeConfig, now: datetime | None = None
) -> tuple[list[Reading], list[DeadLetter]]:
    """Readings from one raw payload, and a dead letter for each part that is not one.

    ``now`` (default: the clock) is what ``max_future_skew_s`` is measured
    from. Never raises: an unexpected internal error becomes a dead letter
    too (and is logged).
    """
    return _decode_guarded(raw, config, _clock(config, now))


def _decode_guarded(
    raw: RawMessage, config: DecodeConfig, clock: _Clock
) -> tuple[list[Reading], list[DeadLetter]]:
    try:
        return _decode(raw, config, clock)
    except Exception as exc:  # any exception here would abort the dataflow
        return [], [_internal_error(raw, exc)]


def _internal_error(raw: Any, exc: Exception) -> DeadLetter:
    """The dead letter of a payload the decoder itself failed on (a bug, logged)."""
    origin = getattr(raw, "origin", None)
    _log.exception("decoder failed", extra={"step": "decode", "origin": origin})
    payload = getattr(raw, "payload", b"")
    text, encoding = payload_text(payload if isinstance(payload, bytes) else repr(payload).encode())
    received = getattr(raw, "received_at", None)
    return DeadLetter(
        received_at=received if isinstance(received, datetime) else datetime.now(UTC),
        source=getattr(raw, "source", "kafka"),
        reason=f"internal decoder error: {type(exc).__name__}: {exc}",
        payload=text,
        payload_encoding=encoding,
        origin=origin if isinstance(origin, str) else None,
    )


def _decode(
    raw: RawMessage, config: DecodeConfig, clock: _Clock
) -> tuple[list[Reading], list[DeadLetter]]:
    payload = raw.payload
    if type(payload) is not bytes:
        payload = (
            payload.encode("utf-8", "backslashreplace")
            if isinstance(payload, str)
            else bytes(payload)
        )
    ctx = _Context(raw, config, clock)
    if len(payload) > config.max_payload_bytes:
        reason = (
            f"payload of {len(payload)} bytes exceeds max_payload_bytes {config.max_payload_bytes}"
        )
        return [], [ctx.dead(reason, payload)]
    if payload.startswith(_BOM):
        payload = payload[len(_BOM) :]
    shape = _shape(payload)
    fmt = raw.fmt
    if fmt != "auto" and shape != ("scalar" if fmt == "number" else fmt):
        # A payload that is not even JSON says so rather than "wrong shape".
        reason = _invalid_json(payload) or f"expected {_FMT_NAMES[fmt]}, got {_SHAPE_NAMES[shape]}"
        return [], [ctx.dead(reason, payload)]
    if shape == "object":
        return _decode_object(ctx, payload)
    if shape == "array":
        return _decode_array(ctx, payload, config.max_batch_items)
    return _decode_scalar(ctx, payload, fmt == "number")


def _invalid_json(payload: bytes) -> str | None:
    """Why the payload is not UTF-8 JSON, or None when it is."""
    try:
        pydantic_core.from_json(payload, allow_inf_nan=True)
    except ValueError as exc:
        return json_reason(payload, str(exc))
    return None


def _json_error(exc: ValidationError) -> str | None:
    first = exc.errors(include_url=False)[0]
    return first["msg"] if first["type"] == "json_invalid" else None


def _decode_object(ctx: _Context, payload: bytes) -> tuple[list[Reading], list[DeadLetter]]:
    try:
        item = _validate_item_json(payload)
    except ValidationError as exc:
        message = _json_error(exc)
        if message is not None:
            return [], [ctx.dead(json_reason(payload, message), payload)]
        return [], [ctx.dead(describe_errors(exc.errors(include_url=False)), payload)]
    result = ctx.read(item)
    if type(result) is str:
        return [], [ctx.dead(result, payload)]
    return [result], []  # type: ignore[list-item]


def _decode_array(
    ctx: _Context, payload: bytes, max_items: int
) -> tuple[list[Reading], list[DeadLetter]]:
    readings: list[Reading] = []
    dead: list[DeadLetter] = []
    try:
        items: list[Any] = _validate_items_json(payload)
        valid = True
    except ValidationError as exc:
        message = _json_error(exc)
        if message is not None:
            return [], [ctx.dead(json_reason(payload, message), payload)]
        # Some items are bad: parse once more and validate item by item.
        items = pydantic_core.from_json(payload, allow_inf_nan=True)
        valid = False
    if not items:
        return [], [ctx.dead("payload is an empty JSON array (no readings)", payload)]
    if len(items) > max_items:
        reason = f"array of {len(items)} items exceeds max_batch_items {max_items}"
        return [], [ctx.dead(reason, payload)]
    reading = ctx.read
    for index, item in enumerate(items):
        if valid:
            result = reading(item)
        else:
            try:
                result = reading(_validate_item(item))
            except ValidationError as exc:
                result = describe_errors(exc.errors(include_url=False))
        if type(result) is str:
            dead.append(ctx.dead(f"item {index}: {result}", item=item))
        else:
            readings.append(result)  # type: ignore[arg-type]
    return readings, dead


def _decode_scalar(
    ctx: _Context, payload: bytes, numbers_only: bool
) -> tuple[list[Reading], list[DeadLetter]]:
    if not payload.strip(_JSON_WS):
        return [], [ctx.dead("payload is empty", payload)]
    try:
        value = pydantic_core.from_json(payload, allow_inf_nan=True)
    except ValueError as exc:
        return [], [ctx.dead(json_reason(payload, str(exc)), payload)]
    kind = json_type(value)
    if kind == "number":
        if not math.isfinite(value):
            reason = "value: must be a finite number (NaN and infinity are not allowed)"
            return [], [ctx.dead(reason, payload)]
    elif numbers_only or kind not in ("bool", "string"):
        wanted = (
            "a bare number" if numbers_only else "an object, an array of objects or a bare value"
        )
        return [], [ctx.dead(f"expected {wanted}, got JSON {kind}", payload)]
    for field, default in (("device", ctx.device), ("metric", ctx.metric)):
        if default is None:
            reason = f"{ctx.missing(field)} (a bare value takes it from the source's defaults)"
            return [], [ctx.dead(reason, payload)]
    if ctx.quality is None:
        return [], [ctx.dead(f"quality: {ctx.notes['quality']}", payload)]
    reading = Reading(
        ctx.device,  # type: ignore[arg-type]
        ctx.metric,  # type: ignore[arg-type]
        ctx.received_at,
        value,
        ctx.tenant,
        ctx.quality,  # type: ignore[arg-type]
        ctx.raw.source,
        ctx.unit,
    )
    return [reading], []


def decode_many(
    items: Iterable[RawMessage | Reading], config: DecodeConfig, now: datetime | None = None
) -> list[Reading | DeadLetter]:
    """Decode a batch for ``flat_map_batch``: readings and dead letters in one list.

    Readings (from trusted sources such as the simulator) pass through
    unchanged, so one decode step can follow merged sources. Branch the result
    with ``isinstance(x, Reading)``. ``now`` is read once for the batch.
    """
    clock = _clock(config, now)
    out: list[Reading | DeadLetter] = []
    for item in items:
        if type(item) is Reading:
            out.append(item)
            continue
        readings, dead = _decode_guarded(item, config, clock)  # type: ignore[arg-type]
        out.extend(readings)
        out.extend(dead)
    return out
