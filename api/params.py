"""Query parameters shared by the routers: time ranges, page sizes, keyset cursors.

>>> c = encode_cursor({"ts": "2026-01-01T00:00:00+00:00"})
>>> decode_cursor(c)
{'ts': '2026-01-01T00:00:00+00:00'}

Every bad value answers 422 naming the parameter (``api/main.py`` adds a
one-line ``message`` to FastAPI's error list).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, AwareDatetime

TEXT_PATTERN = r"^[^\x00]*$"
"""Text PostgreSQL can store: no NUL character.

Query strings and paths are percent-decoded with replacement, so they
carry no lone surrogates; JSON bodies can (``"\\ud800"``), hence
:data:`StorableText` for body fields.
"""

Name = Annotated[str, Query(min_length=1, max_length=200, pattern=TEXT_PATTERN)]
OptionalName = Annotated[str | None, Query(min_length=1, max_length=200, pattern=TEXT_PATTERN)]


def storable_text(value: str) -> str:
    """``value`` if a PostgreSQL text column can hold it; ValueError (a 422) otherwise."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
    return value


def storable_json(value: Any) -> Any:
    """``value`` if every string in it (keys too) is :func:`storable_text`; for jsonb columns."""
    if isinstance(value, str):
        storable_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            storable_text(str(key))
            storable_json(item)
    elif isinstance(value, list):
        for item in value:
            storable_json(item)
    return value


StorableText = Annotated[str, AfterValidator(storable_text)]
"""A body field stored in a text column (see :data:`TEXT_PATTERN`)."""
Start = Annotated[
    AwareDatetime | None,
    Query(
        description="Inclusive start, ISO 8601 with a UTC offset.",
        examples=["2026-01-01T00:00:00Z"],
    ),
]
End = Annotated[
    AwareDatetime | None,
    Query(
        description="Exclusive end, ISO 8601 with a UTC offset.", examples=["2026-01-02T00:00:00Z"]
    ),
]
Limit = Annotated[int, Query(ge=1, le=10_000, description="Most items in the page.")]
Cursor = Annotated[
    str | None, Query(max_length=500, description="The next_cursor of the previous page.")
]


def invalid(param: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 for one query parameter, shaped like FastAPI's own."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", param), "msg": message, "input": value}]
    )


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open time range; either end may be open."""

    start: datetime | None
    end: datetime | None


def time_range(start: Start = None, end: End = None) -> TimeRange:
    """The ``start``/``end`` query parameters; ``start`` must be before ``end``."""
    if start is not None and end is not None and start >= end:
        raise invalid("end", "end must be after start", end.isoformat())
    return TimeRange(start, end)


def encode_cursor(position: dict[str, Any]) -> str:
    """An opaque cursor for a keyset position."""
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str, param: str = "cursor") -> dict[str, Any]:
    """The keyset position of a cursor; 422 when it is not one of ours."""
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise invalid(param, "not a cursor returned by this API", cursor) from exc
    if not isinstance(position, dict):
        raise invalid(param, "not a cursor returned by this API", cursor)
    try:
        storable_json(position)  # its strings go into SQL parameters
    except ValueError as exc:
        raise invalid(param, "not a cursor returned by this API", cursor) from exc
    return position


def cursor_time(position: dict[str, Any], key: str, param: str = "cursor") -> datetime:
    """A timestamp stored in a cursor."""
    try:
        value = datetime.fromisoformat(position[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise invalid(param, "not a cursor returned by this API") from exc
    if value.tzinfo is None:
        raise invalid(param, "not a cursor returned by this API")
    return value


async def read_body(request: Request, limit: int, what: str = "body") -> bytes:
    """The request body, 413 as soon as it (or its declared length) passes ``limit`` bytes.

    Read chunk by chunk, so an oversized body is refused without being held whole.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} of {declared} bytes is larger than {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{what} is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
