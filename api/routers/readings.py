"""Readings and rollups of one series, as JSON pages or as a streamed CSV export.

>>> import httpx
>>> r = httpx.get("http://127.0.0.1:8000/readings",
...               params={"device": "press-1", "metric": "temperature",
...                       "start": "2026-01-01T00:00:00Z"},
...               headers={"X-API-Key": "sfk_..."})  # doctest: +SKIP
>>> [r.path for r in router.routes]
['/readings', '/rollups', '/readings.csv', '/rollups.csv']

A CSV export is named after its series, whatever characters the device
name holds:

>>> print(content_disposition("press 1/temperature.csv"))
attachment; filename="press_1_temperature.csv"; filename*=UTF-8''press%201%2Ftemperature.csv

Pages are keyset-paginated on ``ts`` (readings) or ``window_start``
(rollups): each page's ``next_cursor`` resumes after its last row, so a page
costs an index range scan whatever its position. CSV exports read through a
server-side cursor and stream as they read: a month of one-second data does
not sit in the API's memory.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from psycopg import sql
from psycopg.rows import tuple_row

from api.deps import State, TenantDB, Viewer
from api.models import Page, ReadingOut, RollupOut
from api.params import (
    Cursor,
    Limit,
    Name,
    TimeRange,
    cursor_time,
    decode_cursor,
    encode_cursor,
    invalid,
    time_range,
)
from schemas.config import parse_duration

router = APIRouter(tags=["readings"])

Order = Annotated[Literal["asc", "desc"], Query(description="Time order of the rows.")]
Tier = Annotated[
    str,
    Query(
        pattern=r"^[0-9]{1,6}(s|m|h|d)$",
        description="Stored rollup tier, e.g. 1m, 5m, 1h.",
        examples=["5m"],
    ),
]
Interval = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9]{1,6}(s|m|h|d)$",
        description="Re-bucket the tier's windows into this coarser interval, e.g. 15m, 1d.",
        examples=["1h"],
    ),
]
Range = Annotated[TimeRange, Depends(time_range)]

_READING_COLUMNS = "device, metric, ts, value, value_text, value_bool, quality, source, unit, score"


def _value(row: dict[str, Any]) -> float | bool | str | None:
    for column in ("value", "value_text", "value_bool"):
        if row[column] is not None:
            return row[column]
    return None


def _series_filter(
    device: str, metric: str, rng: TimeRange, time_column: str, extra: dict[str, Any] | None = None
) -> tuple[sql.Composed, dict[str, Any]]:
    # The tenant condition comes from RLS (and the index leads with tenant).
    parts: list[sql.Composable] = [sql.SQL("device = %(device)s AND metric = %(metric)s")]
    params: dict[str, Any] = {"device": device, "metric": metric, **(extra or {})}
    col = sql.Identifier(time_column)
    if rng.start is not None:
        parts.append(sql.SQL("{} >= %(start)s").format(col))
        params["start"] = rng.start
    if rng.end is not None:
        parts.append(sql.SQL("{} < %(end)s").format(col))
        params["end"] = rng.end
    return sql.SQL(" AND ").join(parts), params


def _keyset(
    where: sql.Composed, params: dict[str, Any], cursor: str | None, order: str, column: str
) -> sql.Composed:
    if cursor is None:
        return where
    params["after"] = cursor_time(decode_cursor(cursor), "t")
    op = sql.SQL(">") if order == "asc" else sql.SQL("<")
    return sql.SQL("{} AND {} {} %(after)s").format(where, sql.Identifier(column), op)


@router.get("/readings", response_model=Page[ReadingOut], summary="Readings of one series")
async def readings(
    conn: TenantDB,
    device: Name,
    metric: Name,
    rng: Range,
    limit: Limit = 1000,
    cursor: Cursor = None,
    order: Order = "asc",
) -> Page[ReadingOut]:
    """Readings of ``device``/``metric`` in ``[start, end)``, oldest first (or ``order=desc``)."""
    where, params = _series_filter(device, metric, rng, "ts")
    where = _keyset(where, params, cursor, order, "ts")
    params["limit"] = limit + 1
    query = sql.SQL(
        "SELECT " + _READING_COLUMNS + " FROM readings WHERE {} ORDER BY ts {} LIMIT %(limit)s"
    ).format(where, sql.SQL(order.upper()))
    rows = await (await conn.execute(query, params)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [ReadingOut(**{**row, "value": _value(row)}) for row in rows]
    next_cursor = encode_cursor({"t": rows[-1]["ts"].isoformat()}) if more else None
    return Page[ReadingOut](items=items, next_cursor=next_cursor)


def _interval_seconds(interval: str, tier: str) -> tuple[float, float]:
    tier_s = parse_duration(tier)
    if tier_s <= 0:  # no stored tier is empty, and a multiple of 0 is meaningless
        raise invalid("tier", "tier must be longer than 0", tier)
    try:
        interval_s = parse_duration(interval)
    except ValueError as exc:
        raise invalid("interval", str(exc), interval) from exc
    if interval_s < tier_s or interval_s % tier_s:
        raise invalid(
            "interval",
            f"interval must be a multiple of the tier {tier} (at least as long)",
            interval,
        )
    return tier_s, interval_s


def _rollup_query(
    state: State,
    device: str,
    metric: str,
    tier: str,
    rng: TimeRange,
    interval: str | None,
    order: str,
    cursor: str | None,
) -> tuple[sql.Composed, dict[str, Any]]:
    where, params = _series_filter(device, metric, rng, "window_start", {"tier": tier})
    where = sql.SQL("{} AND tier = %(tier)s").format(where)
    direction = sql.SQL(order.upper())
    if interval is None:
        where = _keyset(where, params, cursor, order, "window_start")
        query = sql.SQL(
            "SELECT device, metric, tier, window_start, window_end, count, min, max, sum,"
            " mean, first, last FROM rollups WHERE {} ORDER BY window_start {}"
        ).format(where, direction)
        return query, params
    _, interval_s = _interval_seconds(interval, tier)
    params["interval"] = f"{interval_s} seconds"
    params["label"] = interval
    # time_bucket where TimescaleDB is installed; date_bin (PostgreSQL 14+)
    # otherwise, with time_bucket's default origin so both agree.
    bucket = (
        "time_bucket(%(interval)s::interval, window_start)"
        if state.extras.get("timescaledb")
        else "date_bin(%(interval)s::interval, window_start, timestamptz '2000-01-03 00:00:00+00')"
    )
    outer: sql.Composable = sql.SQL("TRUE")
    if cursor is not None:
        params["after"] = cursor_time(decode_cursor(cursor), "t")
        outer = sql.SQL("window_start {} %(after)s").format(
            sql.SQL(">") if order == "asc" else sql.SQL("<")
        )
    query = sql.SQL(
        "SELECT device, metric, %(label)s AS tier, window_start,"
        " window_start + %(interval)s::interval AS window_end, count, min, max, sum, mean,"
        " first, last FROM (SELECT device, metric, "
        + bucket
        + " AS window_start, sum(count)::bigint AS count, min(min) AS min, max(max) AS max,"
        " sum(sum) AS sum, sum(sum) / NULLIF(sum(count), 0) AS mean,"
        " (array_agg(first ORDER BY window_start))[1] AS first,"
        " (array_agg(last ORDER BY window_start DESC))[1] AS last"
        " FROM rollups WHERE {} GROUP BY device, metric, 3) b WHERE {}"
        " ORDER BY window_start {}"
    ).format(where, outer, direction)
    return query, params


@router.get("/rollups", response_model=Page[RollupOut], summary="Rollups of one series")
async def rollups(
    state: State,
    conn: TenantDB,
    device: Name,
    metric: Name,
    rng: Range,
    tier: Tier = "1m",
    interval: Interval = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
    order: Order = "asc",
) -> Page[RollupOut]:
    """Windows of one tier in ``[start, end)``; with ``interval``, merged into coarser buckets.

    Merging keeps exact count, min, max, sum and mean (sum / count), first
    and last; variance is not merged (it would need per-window means).
    """
    query, params = _rollup_query(state, device, metric, tier, rng, interval, order, cursor)
    params["limit"] = limit + 1
    query = sql.SQL("{} LIMIT %(limit)s").format(query)
    rows = await (await conn.execute(query, params)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [RollupOut(**row) for row in rows]
    next_cursor = encode_cursor({"t": rows[-1]["window_start"].isoformat()}) if more else None
    return Page[RollupOut](items=items, next_cursor=next_cursor)


_CHUNK_ROWS = 2000


def _csv_text(row: tuple[Any, ...]) -> list[Any]:
    return [v.isoformat() if isinstance(v, datetime) else ("" if v is None else v) for v in row]


async def _stream_csv(
    state: State, tenant: str, header: list[str], query: sql.Composed, params: dict[str, Any]
) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    # A named (server-side) cursor: rows arrive itersize at a time.
    async with (
        state.db.tenant(tenant) as conn,
        conn.cursor(name="streamforge_export", row_factory=tuple_row) as cur,
    ):
        cur.itersize = _CHUNK_ROWS
        await cur.execute(query, params)
        count = 0
        async for row in cur:
            writer.writerow(_csv_text(row))
            count += 1
            if count % _CHUNK_ROWS == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def content_disposition(filename: str) -> str:
    """A Content-Disposition header for any ``filename`` (device names are any text).

    HTTP headers are latin-1 and a quote or line break would end the value,
    so the plain ``filename`` is an ASCII-safe fallback and the exact name
    goes in ``filename*`` (RFC 6266 / RFC 5987, UTF-8 percent-encoded).
    """
    fallback = _UNSAFE_FILENAME.sub("_", filename)
    exact = quote(filename.encode("utf-8", "replace"), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def _csv_response(body: AsyncIterator[str], filename: str) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": content_disposition(filename)},
    )


_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "CSV with a header row."}
}


@router.get("/readings.csv", response_class=StreamingResponse, responses=_CSV)
async def readings_csv(
    state: State,
    caller: Viewer,
    device: Name,
    metric: Name,
    rng: Range,
    order: Order = "asc",
) -> StreamingResponse:
    """All readings of one series in ``[start, end)`` as CSV, streamed."""
    where, params = _series_filter(device, metric, rng, "ts")
    query = sql.SQL(
        "SELECT device, metric, ts, COALESCE(value::text, value_text, value_bool::text),"
        " quality, source, unit, score FROM readings WHERE {} ORDER BY ts {}"
    ).format(where, sql.SQL(order.upper()))
    header = ["device", "metric", "ts", "value", "quality", "source", "unit", "score"]
    body = _stream_csv(state, caller.tenant, header, query, params)
    return _csv_response(body, f"readings-{device}-{metric}.csv")


@router.get("/rollups.csv", response_class=StreamingResponse, responses=_CSV)
async def rollups_csv(
    state: State,
    caller: Viewer,
    device: Name,
    metric: Name,
    rng: Range,
    tier: Tier = "1m",
    interval: Interval = None,
    order: Order = "asc",
) -> StreamingResponse:
    """All rollups of one series and tier in ``[start, end)`` as CSV, streamed."""
    query, params = _rollup_query(state, device, metric, tier, rng, interval, order, None)
    header = [
        "device", "metric", "tier", "window_start", "window_end", "count", "min", "max",
        "sum", "mean", "first", "last",
    ]  # fmt: skip
    body = _stream_csv(state, caller.tenant, header, query, params)
    return _csv_response(body, f"rollups-{device}-{metric}-{interval or tier}.csv")
