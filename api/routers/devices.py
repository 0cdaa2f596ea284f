"""Devices of the caller's tenant: metrics, last seen and active alarms.

>>> import httpx
>>> page = httpx.get("http://127.0.0.1:8000/devices",
...                  headers={"X-API-Key": "sfk_..."}).json()  # doctest: +SKIP
>>> page["items"][0]  # doctest: +SKIP
{'device': 'press-1', 'last_seen': '...', 'metrics': ['temperature'], 'active_alarms': 0}
>>> [(r.path, *r.methods) for r in router.routes]
[('/devices', 'GET'), ('/devices/{device}', 'GET')]

A device is known by its stored readings (telemetry). The list walks the
readings index ``(tenant, device, metric, ts)`` with a loose index scan
(a recursive query that jumps from one series to the next), so its cost
grows with the number of series (times the chunks of the hypertable), not
of readings. A page walks the series after its cursor to the end; fine for
thousands of series, a devices table kept by the sink would be the next step.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path

from api.deps import TenantDB
from api.models import DeviceOut, Page
from api.params import TEXT_PATTERN, Cursor, Limit, decode_cursor, encode_cursor, invalid

router = APIRouter(tags=["devices"])

# One row per series after %(after)s (device order), with its newest reading.
_SERIES = """
WITH RECURSIVE series AS (
    (SELECT device, metric FROM readings
      WHERE device > %(after)s OR (device = %(after)s AND %(device)s::text IS NOT NULL)
      ORDER BY device, metric LIMIT 1)
    UNION ALL
    SELECT n.device, n.metric FROM series s, LATERAL (
        SELECT device, metric FROM readings r
         WHERE (r.device, r.metric) > (s.device, s.metric)
         ORDER BY device, metric LIMIT 1) n
    WHERE %(device)s::text IS NULL OR s.device = %(device)s
)
SELECT s.device, s.metric,
       (SELECT max(ts) FROM readings r WHERE r.device = s.device AND r.metric = s.metric) AS last
  FROM series s
 WHERE %(device)s::text IS NULL OR s.device = %(device)s
"""

_ALARMS = """
SELECT device, count(*) AS active FROM alarms
 WHERE state <> 'cleared' AND device = ANY(%(devices)s) GROUP BY device
"""


async def _devices(conn: TenantDB, after: str, device: str | None, limit: int) -> list[DeviceOut]:
    found: dict[str, dict[str, Any]] = {}
    cur = await conn.execute(_SERIES, {"after": after, "device": device})
    for row in await cur.fetchall():
        entry = found.get(row["device"])
        if entry is None:
            if len(found) == limit:
                break
            entry = found[row["device"]] = {"metrics": [], "last_seen": None}
        entry["metrics"].append(row["metric"])
        last = row["last"]
        if last is not None and (entry["last_seen"] is None or last > entry["last_seen"]):
            entry["last_seen"] = last
    active: dict[str, int] = {}
    if found:
        rows = await (await conn.execute(_ALARMS, {"devices": list(found)})).fetchall()
        active = {r["device"]: r["active"] for r in rows}
    return [
        DeviceOut(
            device=name,
            last_seen=entry["last_seen"],
            metrics=sorted(entry["metrics"]),
            active_alarms=active.get(name, 0),
        )
        for name, entry in found.items()
    ]


@router.get("/devices", response_model=Page[DeviceOut], summary="List devices")
async def list_devices(
    conn: TenantDB, limit: Limit = 100, cursor: Cursor = None
) -> Page[DeviceOut]:
    """Devices with readings, by name, with their metrics, last reading time and active alarms."""
    after = ""
    if cursor is not None:
        after = decode_cursor(cursor).get("d", "")
        if not isinstance(after, str):
            raise invalid("cursor", "not a cursor returned by this API", cursor)
    items = await _devices(conn, after, None, limit + 1)
    more = len(items) > limit
    items = items[:limit]
    return Page[DeviceOut](
        items=items, next_cursor=encode_cursor({"d": items[-1].device}) if more else None
    )


@router.get("/devices/{device}", response_model=DeviceOut, summary="One device")
async def get_device(
    conn: TenantDB, device: str = Path(min_length=1, max_length=200, pattern=TEXT_PATTERN)
) -> DeviceOut:
    """One device of the caller's tenant; 404 when it has no readings."""
    items = await _devices(conn, device, device, 1)
    if not items:
        raise HTTPException(404, f"no device {device!r}")
    return items[0]
