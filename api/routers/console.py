"""The console's page and the data only it needs (the rest is the REST API's own).

>>> sorted(r.path for r in router.routes)
['/', '/console/api/dead-letters', '/console/api/gateways', '/console/api/me',
 '/console/api/pipeline', '/console/api/plant']
>>> device_status(30.0, ConsoleSettings()), device_status(600.0, ConsoleSettings())
('online', 'stale')
>>> device_status(None, ConsoleSettings())
'offline'

``GET /`` is the single page (no credential: it holds no data; the page asks
for a key and keeps it in the browser's session storage). The page reads
``/devices``, ``/readings``, ``/rollups``, ``/events``, ``/alarms`` and
``/flows`` and acts through ``/alarms/{id}/acknowledge|clear`` and
``/flows/{name}/start|stop|restart``, with the caller's key, so the API's
roles and tenant isolation apply unchanged; live updates come from
:mod:`api.routers.live`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache, partial
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from api.console import STATIC_DIR
from api.console.pipeline import gateway_figures, scrape
from api.console.settings import ConsoleSettings
from api.deps import Admin, Caller, TenantDB

router = APIRouter(tags=["console"])


@cache
def console_settings() -> ConsoleSettings:
    """The console's settings (read once from the environment)."""
    return ConsoleSettings()


def device_status(age_s: float | None, settings: ConsoleSettings) -> str:
    """``online``, ``stale`` or ``offline`` from the age of a device's newest reading."""
    if age_s is None or age_s > settings.offline_s:
        return "offline"
    return "online" if age_s <= settings.online_s else "stale"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def console_page() -> HTMLResponse:
    """The console (one page; every asset under ``/console/static``)."""
    return HTMLResponse((STATIC_DIR / "index.html").read_text())


@router.get("/console/api/me", summary="Who the credential is")
async def me(caller: Caller) -> dict[str, str]:
    """The caller's tenant and role (the page shows the actions the role allows)."""
    return {"tenant": caller.tenant, "role": caller.role, "subject": caller.subject}


# Newest reading of every series: a loose index scan over (device, metric)
# (one index probe per series, as /devices does) and the newest row of each.
_LATEST = """
WITH RECURSIVE series AS (
    (SELECT device, metric FROM readings ORDER BY device, metric LIMIT 1)
    UNION ALL
    SELECT n.device, n.metric FROM series s, LATERAL (
        SELECT device, metric FROM readings r
         WHERE (r.device, r.metric) > (s.device, s.metric)
         ORDER BY device, metric LIMIT 1) n
)
SELECT s.device, s.metric, l.ts, l.value, l.value_text, l.value_bool, l.score, l.unit
  FROM series s, LATERAL (
      SELECT ts, value, value_text, value_bool, score, unit FROM readings r
       WHERE r.device = s.device AND r.metric = s.metric ORDER BY ts DESC LIMIT 1) l
 LIMIT %(limit)s
"""
_ACTIVE = """
SELECT id, device, metric, rule, severity, state, raised_at, message FROM alarms
 WHERE state <> 'cleared' ORDER BY raised_at DESC LIMIT 1000
"""


class LatestValue(BaseModel):
    """A series' newest reading."""

    metric: str
    ts: datetime
    value: float | str | bool | None
    score: float | None = None
    unit: str | None = None


class PlantDevice(BaseModel):
    """A device on the Plant page."""

    device: str
    status: str
    last_seen: datetime | None
    values: list[LatestValue]
    active_alarms: list[dict[str, Any]]


@router.get("/console/api/plant", response_model=list[PlantDevice], summary="Plant overview")
async def plant(
    conn: TenantDB, limit: Annotated[int, Query(ge=1, le=20000)] = 5000
) -> list[PlantDevice]:
    """Every device of the caller's tenant: status, newest value per metric, active alarms."""
    settings = console_settings()
    devices: dict[str, PlantDevice] = {}
    now = datetime.now(UTC)
    cur = await conn.execute(_LATEST, {"limit": limit})
    for row in await cur.fetchall():
        values = (row[k] for k in ("value", "value_text", "value_bool") if row[k] is not None)
        value = next(values, None)
        d = devices.setdefault(
            row["device"], PlantDevice(device=row["device"], status="offline", last_seen=None,
                                       values=[], active_alarms=[])
        )  # fmt: skip
        d.values.append(
            LatestValue(metric=row["metric"], ts=row["ts"], value=value, score=row["score"],
                        unit=row["unit"])
        )  # fmt: skip
        if d.last_seen is None or row["ts"] > d.last_seen:
            d.last_seen = row["ts"]
    cur = await conn.execute(_ACTIVE)
    for row in await cur.fetchall():
        d = devices.setdefault(
            row["device"], PlantDevice(device=row["device"], status="offline", last_seen=None,
                                       values=[], active_alarms=[])
        )  # fmt: skip
        d.active_alarms.append(row)
    for d in devices.values():
        age = (now - d.last_seen).total_seconds() if d.last_seen else None
        d.status = device_status(age, settings)
    return sorted(devices.values(), key=lambda d: d.device)


_DEAD = """
SELECT received_at, source, origin, step, reason, left(payload, 300) AS payload
  FROM dead_letters ORDER BY received_at DESC LIMIT %(limit)s
"""


@router.get("/console/api/dead-letters", summary="Latest dead letters")
async def dead_letters(
    conn: TenantDB, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[dict[str, Any]]:
    """The caller's tenant's newest dead letters with their reasons (payload cut at 300)."""
    cur = await conn.execute(_DEAD, {"limit": limit})
    return list(await cur.fetchall())


@router.get("/console/api/pipeline", summary="Flow process figures (admin)")
async def pipeline(_admin: Admin) -> list[dict[str, Any]]:
    """Readings, dead letters, Kafka lag, writer queue and errors of each flow process.

    Admins only: a flow process's counters are not split by tenant.
    """
    return await scrape(console_settings().targets())


@router.get("/console/api/gateways", summary="Edge gateway spool figures (admin)")
async def gateways(_admin: Admin) -> list[dict[str, Any]]:
    """Each gateway's spool (bytes, records, oldest record's age), forwarded and dropped records.

    From each ``STREAMFORGE_CONSOLE_GATEWAY_TARGETS`` metrics server; ``warnings``
    names records dropped and an oldest record older than ``gateway_max_age_s``.
    Admins only, as the flow processes' figures.
    """
    settings = console_settings()
    figures = partial(gateway_figures, max_age_s=settings.gateway_max_age_s)
    return await scrape(settings.gateways(), figures=figures)
