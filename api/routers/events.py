"""Events (discrete changes of state) of the caller's tenant, newest first.

>>> import httpx
>>> httpx.get("http://127.0.0.1:8000/events", params={"device": "press-1"},
...           headers={"X-API-Key": "sfk_..."}).json()  # doctest: +SKIP
{'items': [{'device': 'press-1', 'metric': 'state.mode', ...}], 'next_cursor': None}
>>> [(r.path, *r.methods) for r in router.routes]
[('/events', 'GET')]
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from psycopg import sql

from api.deps import TenantDB
from api.models import EventOut, Page
from api.params import (
    Cursor,
    Limit,
    OptionalName,
    TimeRange,
    cursor_time,
    decode_cursor,
    encode_cursor,
    invalid,
    time_range,
)

router = APIRouter(tags=["events"])


@router.get("/events", response_model=Page[EventOut], summary="List events")
async def list_events(
    conn: TenantDB,
    rng: Annotated[TimeRange, Depends(time_range)],
    device: OptionalName = None,
    metric: OptionalName = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[EventOut]:
    """Events in ``[start, end)``, optionally of one device and metric, newest first."""
    parts: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {"limit": limit + 1}
    for name, value in (("device", device), ("metric", metric)):
        if value is not None:
            parts.append(sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)))
            params[name] = value
    if rng.start is not None:
        parts.append(sql.SQL("ts >= %(start)s"))
        params["start"] = rng.start
    if rng.end is not None:
        parts.append(sql.SQL("ts < %(end)s"))
        params["end"] = rng.end
    if cursor is not None:
        position = decode_cursor(cursor)
        params["c_ts"] = cursor_time(position, "t")
        params["c_device"], params["c_metric"] = position.get("d"), position.get("m")
        if not isinstance(params["c_device"], str) or not isinstance(params["c_metric"], str):
            raise invalid("cursor", "not a cursor returned by this API", cursor)
        parts.append(sql.SQL("(ts, device, metric) < (%(c_ts)s, %(c_device)s, %(c_metric)s)"))
    query = sql.SQL(
        "SELECT device, metric, ts, previous, value, source FROM events WHERE {}"
        " ORDER BY ts DESC, device DESC, metric DESC LIMIT %(limit)s"
    ).format(sql.SQL(" AND ").join(parts))
    rows = await (await conn.execute(query, params)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = encode_cursor(
            {"t": last["ts"].isoformat(), "d": last["device"], "m": last["metric"]}
        )
    return Page[EventOut](items=[EventOut(**r) for r in rows], next_cursor=next_cursor)
