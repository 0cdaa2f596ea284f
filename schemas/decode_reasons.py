"""Why a payload is not a reading, in words: pydantic errors, timestamps, JSON errors.

>>> parse_timestamp("2026-01-01T02:00:00+02:00")
datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
>>> parse_timestamp("2026-01-01T00:00:00")
'ts: timestamp has no timezone'

Helpers of :mod:`flows.decode`, kept apart so the decoder reads as the
happy path. Every function returns a reason string instead of raising.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

__all__ = [
    "describe_errors",
    "item_text",
    "json_reason",
    "json_type",
    "number_text",
    "parse_timestamp",
    "payload_text",
    "short",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def json_type(value: Any) -> str:
    """The JSON name of a parsed JSON value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (reasons quote input, never all of it)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def number_text(x: float) -> str:
    """A number without trailing zeros: 300.0 -> '300', 0.25 -> '0.25'."""
    return f"{x:.3f}".rstrip("0").rstrip(".")


def _field_problem(field: str, errors: list[dict[str, Any]]) -> str:
    """One message for all of pydantic's errors about one field (unions give several)."""
    first = errors[0]
    kind = first["type"]
    value = first.get("input")
    if kind == "missing":
        return f"missing field {field}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown field {field}"
    if kind == "finite_number" or (isinstance(value, float) and not math.isfinite(value)):
        return f"{field}: must be a finite number (NaN and infinity are not allowed)"
    if field == "value":
        return f"value: expected number, bool or string, got {json_type(value)}"
    if kind == "string_too_short":
        return f"{field}: must not be empty"
    if kind == "string_too_long":
        return f"{field}: must be at most {first['ctx']['max_length']} characters"
    if kind == "literal_error":
        return f"{field}: must be one of {first['ctx']['expected']}, got {short(value)}"
    if kind == "string_type":
        return f"{field}: expected string, got {json_type(value)}"
    if kind == "dict_type":
        return f"{field}: expected object, got {json_type(value)}"
    return f"{field}: {first['msg'][0].lower()}{first['msg'][1:]}"


def describe_errors(errors: list[Any]) -> str:
    """'f1: problem; f2: problem' from the errors of one object (loc relative to it)."""
    by_field: dict[str, list[dict[str, Any]]] = {}
    for error in errors:
        loc = error["loc"]
        if not loc:
            return f"expected a JSON object, got {json_type(error.get('input'))}"
        # Union members add their name to loc; only the field (and dict keys) matter.
        field = str(loc[0]) if loc[0] != "attributes" else ".".join(str(p) for p in loc[:2])
        by_field.setdefault(field, []).append(error)
    return "; ".join(_field_problem(field, errs) for field, errs in by_field.items())


def parse_timestamp(value: Any) -> datetime | str:
    """An aware UTC datetime from an ISO string or epoch number, or the reason it is not."""
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return f"ts: {short(value)} is not an ISO 8601 timestamp or an epoch number"
            return parse_timestamp(number)
        if ts.tzinfo is UTC:
            return ts
        if ts.tzinfo is None:
            return "ts: timestamp has no timezone"
        try:
            return ts.astimezone(UTC)
        except OverflowError:
            return f"ts: {short(value)} is out of range once converted to UTC"
    if type(value) is int or type(value) is float:
        if not math.isfinite(value):
            return "ts: must be a finite number (NaN and infinity are not allowed)"
        magnitude = abs(value)
        scale = (
            1 if magnitude < 1e11 else 1e3 if magnitude < 1e14 else 1e6 if magnitude < 1e17 else 1e9
        )
        try:
            if type(value) is int and scale != 1:
                # Integer microseconds keep ms/us/ns epochs exact.
                return _EPOCH + timedelta(microseconds=value * 1_000_000 // int(scale))
            return datetime.fromtimestamp(value / scale, UTC)
        except (OverflowError, ValueError, OSError):
            return f"ts: epoch {short(value)} is out of the supported range (years 1-9999)"
    return f"ts: expected an ISO 8601 string or an epoch number, got {json_type(value)}"


def payload_text(payload: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """A payload as dead-letter text: itself when UTF-8, else base64 (and which it is)."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


def item_text(item: Any) -> tuple[str, Literal["utf-8", "base64"]]:
    """One parsed array item as compact JSON text, for its own dead letter."""
    try:
        text = json.dumps(item, ensure_ascii=False, allow_nan=True, separators=(",", ":"))
        return text, "utf-8"
    except (TypeError, ValueError) as exc:  # e.g. an integer of more than 4300 digits
        return f"<item not re-serialisable: {exc}>", "utf-8"


def json_reason(payload: bytes, message: str) -> str:
    """Why a payload the JSON parser rejected is bad: not UTF-8, or the parser's message."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = payload[exc.start]
        return f"payload is not UTF-8 ({exc.reason} 0x{bad:02x} at byte {exc.start})"
    return f"payload is not valid JSON: {message.removeprefix('Invalid JSON: ')}"
