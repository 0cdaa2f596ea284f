"""The device registry of the caller's tenant: register, import, list, decommission, policy.

>>> import httpx
>>> page = httpx.get("http://127.0.0.1:8000/devices?registration=discovered",
...                  headers={"X-API-Key": "sfk_..."}).json()  # doctest: +SKIP
>>> page["items"][0]["registration"], page["items"][0]["status"]  # doctest: +SKIP
('discovered', 'online')
>>> for route in router.routes:
...     print(*route.methods, route.path)
GET /devices
GET /devices/{device}
POST /devices
POST /devices/import
POST /devices/{device}/decommission
GET /device-policy
PUT /device-policy

Reading needs the viewer role, everything else admin. A device is listed
when it is registered (table ``devices``, ``schemas/sql/010_device_registry.sql``)
or *discovered*: seen in the stored data (readings, events, logs, or an
alarm signal of its own, kind ``device``) without a registration.

**Cost.** Nothing here reads rows in proportion to the data stored. A page
takes its devices from a loose index scan of each source (a recursive query
jumping from one device to the next along the ``(tenant, device, ...)``
indexes: one probe per device and chunk), merged in device order; then, for
the page's devices only, the series of each (the same jump along
``(device, metric)``) with the newest row of each series, the newest log
line and alarm signal (one probe each), the registration and the active
alarms. A filter on status or on registration ``discovered`` is applied to
those devices, so a page looks at more devices until it is full, at most
:data:`FILTER_SCAN` beyond ``limit``; when it stops there it returns what it
found with a ``next_cursor`` to go on from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from api.console.settings import ConsoleSettings
from api.deps import Admin, State, TenantDB
from api.models import (
    DecommissionIn,
    DeviceOut,
    DevicePolicyIn,
    DevicePolicyOut,
    ImportRejectedOut,
    ImportResult,
    LastValue,
    Page,
)
from api.params import (
    TEXT_PATTERN,
    Cursor,
    Limit,
    decode_cursor,
    encode_cursor,
    invalid,
    read_body,
)
from api.registry import (
    MAX_IMPORT_BYTES,
    MEDIA_TYPES,
    RejectedImportError,
    UnsupportedMediaTypeError,
    device_status,
    in_range,
    parse_import,
    storable_problems,
)
from schemas.devices import DeviceRegistration, MetricSpec

router = APIRouter(tags=["devices"])

FILTER_SCAN = 1000
"""How many devices beyond ``limit`` a filtered page looks at before it answers anyway."""

DeviceName = Annotated[str, Path(min_length=1, max_length=200, pattern=TEXT_PATTERN)]
Registration = Literal["registered", "discovered", "decommissioned"]
Status = Literal["online", "stale", "offline", "unknown"]
_FilterText = Annotated[str | None, Query(min_length=1, max_length=100, pattern=TEXT_PATTERN)]

# ---- which devices: one loose index scan per source, merged ------------------------------
# Each source yields its devices after %(after)s in order, one index probe
# per device (and chunk); the outer LIMIT stops each recursion early.
_SEEN_SOURCES = {
    "seen_readings": "readings",
    "seen_events": "events",
    "seen_logs": "logs",
    # A device's own alarm signal: the partial index alarms_device_signal.
    "seen_signals": "alarms",
}


def _loose_scan(name: str, table: str) -> str:
    extra = " AND kind = 'device'" if table == "alarms" else ""
    return f"""
{name} AS (
    (SELECT device FROM {table} WHERE device > %(after)s{extra} ORDER BY device LIMIT 1)
    UNION ALL
    SELECT n.device FROM {name} p, LATERAL (
        SELECT device FROM {table} x WHERE x.device > p.device{extra}
         ORDER BY device LIMIT 1) n
)"""


_REGISTERED_CANDIDATES = """
SELECT device FROM devices
 WHERE device > %(after)s
   AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
   AND (%(type)s::text IS NULL OR type = %(type)s)
   AND (%(area)s::text IS NULL OR area = %(area)s)
   AND tags @> %(tags)s::text[]
 ORDER BY device LIMIT %(n)s
"""


def _candidates_sql(seen: bool, registered: bool) -> str:
    """The next %(n)s devices after %(after)s of the chosen sources, in order."""
    parts = []
    if seen:
        parts += [f"(SELECT device FROM {name} LIMIT %(n)s)" for name in _SEEN_SOURCES]
    if registered:
        parts.append(f"({_REGISTERED_CANDIDATES})")
    union = "\n UNION ".join(parts)  # UNION, not UNION ALL: a device is in several sources
    head = ""
    if seen:
        head = "WITH RECURSIVE" + ",".join(_loose_scan(n, t) for n, t in _SEEN_SOURCES.items())
    return f"{head}\nSELECT device FROM ({union}) u ORDER BY device LIMIT %(n)s"


_CANDIDATES = {
    (seen, registered): _candidates_sql(seen, registered)
    for seen in (True, False)
    for registered in (True, False)
    if seen or registered
}


# ---- what each device of a page has sent ----------------------------------------------------
# %(devices)s::text[] COLLATE "C": the key columns are "C"; an array of the
# default collation would conflict with them (and could not use the indexes).
_READINGS = """
WITH RECURSIVE page AS (SELECT unnest(%(devices)s::text[]) COLLATE "C" AS device),
series AS (
    SELECT f.device, f.metric FROM page p, LATERAL (
        SELECT device, metric FROM readings r WHERE r.device = p.device
         ORDER BY metric LIMIT 1) f
    UNION ALL
    SELECT n.device, n.metric FROM series s, LATERAL (
        SELECT device, metric FROM readings r WHERE r.device = s.device AND r.metric > s.metric
         ORDER BY metric LIMIT 1) n
)
SELECT s.device, s.metric, l.ts, l.value, l.value_text, l.value_bool, l.unit
  FROM series s CROSS JOIN LATERAL (
      SELECT ts, value, value_text, value_bool, unit FROM readings r
       WHERE r.device = s.device AND r.metric = s.metric ORDER BY ts DESC LIMIT 1) l
"""
_EVENTS = """
WITH RECURSIVE page AS (SELECT unnest(%(devices)s::text[]) COLLATE "C" AS device),
series AS (
    SELECT f.device, f.metric FROM page p, LATERAL (
        SELECT device, metric FROM events e WHERE e.device = p.device
         ORDER BY metric LIMIT 1) f
    UNION ALL
    SELECT n.device, n.metric FROM series s, LATERAL (
        SELECT device, metric FROM events e WHERE e.device = s.device AND e.metric > s.metric
         ORDER BY metric LIMIT 1) n
)
SELECT s.device, s.metric, l.ts, l.value
  FROM series s CROSS JOIN LATERAL (
      SELECT ts, value FROM events e
       WHERE e.device = s.device AND e.metric = s.metric ORDER BY ts DESC LIMIT 1) l
"""
_OTHERS = """
SELECT p.device,
       (SELECT max(ts) FROM logs l WHERE l.device = p.device) AS log_ts,
       (SELECT max(ts) FROM alarms a WHERE a.device = p.device AND a.kind = 'device') AS signal_ts,
       (SELECT count(*) FROM alarms a WHERE a.device = p.device
           AND a.state IN ('raised', 'acknowledged'))
           AS active_alarms
  FROM unnest(%(devices)s::text[] COLLATE "C") AS p(device)
"""
_REGISTRATION_COLUMNS = (
    "device, name, type, area, tags, metrics, status, revision, registered_at, registered_by,"
    " updated_at, updated_by, decommissioned_at, decommission_reason"
)
_REGISTRATIONS = (
    "SELECT " + _REGISTRATION_COLUMNS + " FROM devices WHERE device = ANY(%(devices)s::text[])"
)


@dataclass
class DeviceFilter:
    """The list's filters; every given one must hold."""

    registration: set[str] = field(default_factory=set)
    status: set[str] = field(default_factory=set)
    type: str | None = None
    area: str | None = None
    tags: list[str] = field(default_factory=list)

    def registry_only(self) -> bool:
        """True when only registered devices can match (a discovered one has no metadata)."""
        metadata = self.type is not None or self.area is not None or bool(self.tags)
        return metadata or bool(self.registration and "discovered" not in self.registration)

    def filtering(self) -> bool:
        """True when some listed devices may not match (a page may need more of them)."""
        return bool(self.registration or self.status or self.registry_only())

    def matches(self, device: DeviceOut) -> bool:
        """Whether a device passes every filter."""
        return (
            (not self.registration or device.registration in self.registration)
            and (not self.status or device.status in self.status)
            and (self.type is None or device.type == self.type)
            and (self.area is None or device.area == self.area)
            and all(tag in device.tags for tag in self.tags)
        )


async def _candidates(conn: TenantDB, after: str, n: int, filters: DeviceFilter) -> list[str]:
    """The next ``n`` devices after ``after`` that may match ``filters``."""
    registry_only = filters.registry_only()
    statuses = None
    if filters.registration and registry_only:
        names = {"registered": "active", "decommissioned": "decommissioned"}
        statuses = sorted(names[r] for r in filters.registration if r in names)
    # Registered devices are discovered by nobody: a filter on discovered ones skips the table.
    registered = filters.registration != {"discovered"}
    if registry_only and not registered:
        return []  # discovered devices have no type, area or tags to match
    sql = _CANDIDATES[(not registry_only, registered)]
    params = {
        "after": after,
        "n": n,
        "statuses": statuses,
        "type": filters.type,
        "area": filters.area,
        "tags": filters.tags,
    }
    cur = await conn.execute(sql, params)
    return [row["device"] for row in await cur.fetchall()]


def _specs(stored: Any) -> dict[str, MetricSpec]:
    """The registered metric specs of a row; one written by hand that does not parse is left out."""
    specs: dict[str, MetricSpec] = {}
    if not isinstance(stored, dict):
        return specs
    for metric, spec in stored.items():
        try:
            specs[metric] = MetricSpec.model_validate(spec)
        except ValidationError:
            continue  # a bad spec must not make the whole list fail
    return specs


def _value(row: dict[str, Any]) -> Any:
    for key in ("value", "value_text", "value_bool"):
        if row[key] is not None:
            return row[key]
    return None


async def _describe(conn: TenantDB, devices: list[str], state: State) -> dict[str, DeviceOut]:
    """Each given device that is registered or was seen, as the list shows it."""
    params = {"devices": devices}
    regs = {r["device"]: r for r in await (await conn.execute(_REGISTRATIONS, params)).fetchall()}
    readings = await (await conn.execute(_READINGS, params)).fetchall()
    events = await (await conn.execute(_EVENTS, params)).fetchall()
    others = {r["device"]: r for r in await (await conn.execute(_OTHERS, params)).fetchall()}
    now = datetime.now(UTC)
    ages = ConsoleSettings()  # STREAMFORGE_CONSOLE_ONLINE_S and _OFFLINE_S
    found: dict[str, DeviceOut] = {}
    for name in devices:
        reg = regs.get(name)
        specs = _specs(reg["metrics"]) if reg else {}
        other = others.get(name) or {}
        out = DeviceOut(
            device=name,
            last_seen=None,
            metrics=[],
            active_alarms=other.get("active_alarms") or 0,
            metric_specs=specs,
        )
        if reg is not None:
            out.registration = "registered" if reg["status"] == "active" else "decommissioned"
            for key in ("name", "type", "area", "tags", "revision", "registered_at",
                        "registered_by", "updated_at", "updated_by", "decommissioned_at",
                        "decommission_reason"):  # fmt: skip
                setattr(out, key, reg[key])
        seen = [t for t in (other.get("log_ts"), other.get("signal_ts")) if t is not None]
        out.last_seen = max(seen) if seen else None  # readings and events below may be newer
        found[name] = out
    for row in readings:
        out = found[row["device"]]
        out.metrics.append(row["metric"])
        _take(out, row["metric"], _value(row), row["ts"], row["unit"])
    for row in events:
        out = found[row["device"]]
        out.event_metrics.append(row["metric"])
        _take(out, row["metric"], row["value"], row["ts"], None)
    for name, out in list(found.items()):
        if out.last_seen is None and regs.get(name) is None:
            del found[name]  # neither registered nor seen (gone since it was listed)
            continue
        out.metrics.sort()
        out.event_metrics.sort()
        # The Plant page's thresholds, so the two pages agree on a device.
        out.status = device_status(out.last_seen, now, ages.online_s, ages.offline_s)
    return found


def _take(out: DeviceOut, metric: str, value: Any, ts: datetime, unit: str | None) -> None:
    """Note a metric's newest value (readings and events of one metric: the newer wins)."""
    if out.last_seen is None or ts > out.last_seen:
        out.last_seen = ts
    known = out.last_values.get(metric)
    if known is not None and known.ts >= ts:
        return
    spec = out.metric_specs.get(metric)
    out.last_values[metric] = LastValue(
        value=value,
        ts=ts,
        unit=spec.unit if spec is not None and spec.unit is not None else unit,
        in_range=in_range(value, spec),
    )


async def _page(
    conn: TenantDB, state: State, after: str, limit: int, filters: DeviceFilter
) -> Page[DeviceOut]:
    items: list[DeviceOut] = []
    scanned, position, exhausted = 0, after, False
    budget = limit + 1 + (FILTER_SCAN if filters.filtering() else 0)
    while len(items) <= limit and scanned < budget:
        wanted = limit + 1 - len(items)
        if filters.filtering():
            wanted = max(wanted, 100)  # matches may be sparse: fewer, larger rounds
        wanted = min(wanted, budget - scanned)
        names = await _candidates(conn, position, wanted, filters)
        described = await _describe(conn, names, state) if names else {}
        for name in names:
            scanned += 1
            position = name
            out = described.get(name)
            if out is not None and filters.matches(out):
                items.append(out)
                if len(items) > limit:
                    break
        if len(names) < wanted:
            exhausted = True
            break
    if len(items) > limit:
        items = items[:limit]
        return Page[DeviceOut](items=items, next_cursor=encode_cursor({"d": items[-1].device}))
    if exhausted or scanned < budget:
        return Page[DeviceOut](items=items, next_cursor=None)
    # The scan budget ran out before the page filled: go on from the last device looked at.
    return Page[DeviceOut](items=items, next_cursor=encode_cursor({"d": position}))


@router.get("/devices", response_model=Page[DeviceOut], summary="List devices")
async def list_devices(
    conn: TenantDB,
    state: State,
    limit: Limit = 100,
    cursor: Cursor = None,
    registration: Annotated[
        list[Registration] | None, Query(description="Any of these (repeatable).")
    ] = None,
    status: Annotated[list[Status] | None, Query(description="Any of these (repeatable).")] = None,
    type: Annotated[_FilterText, Query(description="Registered type, exactly.")] = None,
    area: Annotated[_FilterText, Query(description="Registered area, exactly.")] = None,
    tag: Annotated[
        list[str] | None, Query(description="Registered tags (repeatable); all must be on it.")
    ] = None,
) -> Page[DeviceOut]:
    """Registered, decommissioned and discovered devices, by name, with status and last values.

    A page filtered by status or ``registration=discovered`` may hold fewer
    than ``limit`` devices and still have a ``next_cursor``: follow it.
    """
    after = ""
    if cursor is not None:
        after = decode_cursor(cursor).get("d", "")
        if not isinstance(after, str):
            raise invalid("cursor", "not a cursor returned by this API", cursor)
    if len(tag or ()) > 50:
        raise invalid("tag", "at most 50 tags", tag)
    for value in tag or ():
        if not value or len(value) > 100 or "\x00" in value:
            raise invalid("tag", "a tag is 1 to 100 characters, without NUL", value)
    filters = DeviceFilter(
        registration=set(registration or ()),
        status=set(status or ()),
        type=type,
        area=area,
        tags=sorted(set(tag or ())),
    )
    return await _page(conn, state, after, limit, filters)


async def _one(conn: TenantDB, state: State, device: str) -> DeviceOut | None:
    return (await _describe(conn, [device], state)).get(device)


@router.get("/devices/{device}", response_model=DeviceOut, summary="One device")
async def get_device(conn: TenantDB, state: State, device: DeviceName) -> DeviceOut:
    """One device of the caller's tenant; 404 when it is neither registered nor seen."""
    out = await _one(conn, state, device)
    if out is None:
        raise HTTPException(404, f"no device {device!r}")
    return out


# ---- registration ----------------------------------------------------------------------------
# Re-registering revives a decommissioned device. The WHERE skips the UPDATE
# (and so the revision trigger) when nothing changes: flows re-apply their
# rules to a device whose revision grew, which a repeated import must not cause.
_UPSERT = """
INSERT INTO devices AS d (tenant, device, name, type, area, tags, metrics, registered_by,
                          updated_by)
VALUES (%(tenant)s, %(device)s, %(name)s, %(type)s, %(area)s, %(tags)s::text[], %(metrics)s,
        %(by)s, %(by)s)
ON CONFLICT (tenant, device) DO UPDATE SET
    name = EXCLUDED.name, type = EXCLUDED.type, area = EXCLUDED.area, tags = EXCLUDED.tags,
    metrics = EXCLUDED.metrics, status = 'active', decommissioned_at = NULL,
    decommission_reason = NULL, updated_by = EXCLUDED.updated_by
WHERE (d.name, d.type, d.area, d.tags, d.metrics, d.status)
      IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.type, EXCLUDED.area, EXCLUDED.tags, EXCLUDED.metrics, 'active')
RETURNING (xmax = 0) AS created
"""


def _upsert_params(registration: DeviceRegistration, tenant: str, by: str) -> dict[str, Any]:
    metrics = {
        name: spec.model_dump(exclude_none=True) for name, spec in registration.metrics.items()
    }
    return {
        "tenant": tenant,
        "device": registration.device,
        "name": registration.name,
        "type": registration.type,
        "area": registration.area,
        "tags": registration.tags,
        "metrics": Jsonb(metrics),
        "by": by,
    }


def _loc(field: str) -> tuple[str, ...]:
    return ("body",) if field == "(row)" else ("body", *field.split("."))


def _check_storable(registration: DeviceRegistration) -> None:
    """422 (as FastAPI's own validation) for what the model takes but the database cannot hold."""
    problems = storable_problems(registration)
    if problems:
        raise RequestValidationError(
            [{"type": "value_error", "loc": _loc(f), "msg": m, "input": None} for f, m in problems]
        )


@router.post(
    "/devices",
    response_model=DeviceOut,
    status_code=201,
    summary="Register a device",
    responses={200: {"model": DeviceOut, "description": "Already registered: updated or equal."}},
)
async def register_device(
    conn: TenantDB, caller: Admin, state: State, body: DeviceRegistration, response: Response
) -> DeviceOut:
    """Register a device, or update its registration (201 when new, 200 otherwise).

    A decommissioned device registered again is active again. A registration
    equal to the stored one changes nothing (its revision stays).
    """
    _check_storable(body)
    cur = await conn.execute(_UPSERT, _upsert_params(body, caller.tenant, caller.subject))
    row = await cur.fetchone()
    if row is None or not row["created"]:
        response.status_code = 200
    out = await _one(conn, state, body.device)
    assert out is not None  # just written, in this transaction
    return out


_IMPORT_BODY = {
    "required": True,
    "description": "A CSV file (header device,name,type,area,tags,metrics; tags as a;b, "
    "metrics as name:unit:min:max;...), or a YAML or JSON list of registrations "
    "(or {devices: [...]}). At most 5 MiB and 10,000 devices.",
    "content": {
        "text/csv": {
            "schema": {"type": "string"},
            "example": "device,name,type,area,tags,metrics\n"
            "press-1,Press 1,press,north,line-1;critical,temperature:degC:0:120;rpm:1/min::\n",
        },
        "application/yaml": {"schema": {"type": "string"}},
        "application/json": {
            "schema": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/DeviceRegistration"},
            }
        },
    },
}


async def _import(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    registrations: Iterable[DeviceRegistration],
    tenant: str,
    by: str,
) -> ImportResult:
    params = [_upsert_params(r, tenant, by) for r in registrations]
    if not params:
        return ImportResult(created=0, updated=0, unchanged=0)
    created = updated = 0
    async with conn.cursor() as cur:
        # One statement per device, pipelined; each returns a row unless it changed nothing.
        await cur.executemany(_UPSERT, params, returning=True)
        while True:
            row = await cur.fetchone()
            if row is not None:
                if row["created"]:
                    created += 1
                else:
                    updated += 1
            if not cur.nextset():
                break
    return ImportResult(created=created, updated=updated, unchanged=len(params) - created - updated)


@router.post(
    "/devices/import",
    response_model=ImportResult,
    summary="Register devices in bulk (CSV, YAML, JSON)",
    openapi_extra={"requestBody": _IMPORT_BODY},
    responses={
        413: {"description": "The body is over 5 MiB."},
        415: {"description": f"Not one of {', '.join(MEDIA_TYPES)}."},
        422: {"model": ImportRejectedOut, "description": "Bad rows; nothing was written."},
    },
)
async def import_devices(request: Request, caller: Admin, state: State) -> Any:
    """Register or update every device of a file in one transaction: all of them, or none.

    Every row is validated first; any bad one answers 422 listing each bad
    row (CSV line or list index, field, message) and nothing is written.
    """
    body = await read_body(request, MAX_IMPORT_BYTES, "an import")
    try:
        # Off the event loop: a 5 MiB YAML document takes a while to parse.
        registrations = await asyncio.to_thread(
            parse_import, body, request.headers.get("content-type", "")
        )
    except UnsupportedMediaTypeError as exc:
        raise HTTPException(415, str(exc)) from exc
    except RejectedImportError as exc:
        content = {"message": exc.message, "errors": [p.as_dict() for p in exc.problems]}
        return JSONResponse(content, status_code=422)
    # The connection is taken only now: a slow upload holds none.
    try:
        async with state.db.tenant(caller.tenant) as conn:
            return await _import(conn, registrations, caller.tenant, caller.subject)
    except psycopg.OperationalError as exc:
        raise HTTPException(503, f"database unavailable: {exc}") from exc


# ---- decommissioning ---------------------------------------------------------------------------
# Idempotent: a device already decommissioned keeps its time and reason.
_DECOMMISSION = """
INSERT INTO devices AS d (tenant, device, status, decommissioned_at, decommission_reason,
                          registered_by, updated_by)
VALUES (%(tenant)s, %(device)s, 'decommissioned', now(), %(reason)s, %(by)s, %(by)s)
ON CONFLICT (tenant, device) DO UPDATE SET
    status = 'decommissioned', decommissioned_at = now(),
    decommission_reason = EXCLUDED.decommission_reason, updated_by = EXCLUDED.updated_by
WHERE d.status <> 'decommissioned'
"""


@router.post(
    "/devices/{device}/decommission", response_model=DeviceOut, summary="Decommission a device"
)
async def decommission_device(
    conn: TenantDB,
    caller: Admin,
    state: State,
    device: DeviceName,
    body: DecommissionIn | None = None,
) -> DeviceOut:
    """Retire a device: flows reject its readings and end its state (alarms cleared).

    A discovered device is registered as decommissioned. Idempotent: a
    device already decommissioned is left as it is. 404 when the device is
    neither registered nor seen.
    """
    if await _one(conn, state, device) is None:
        raise HTTPException(404, f"no device {device!r}")
    reason = body.reason if body is not None else None
    await conn.execute(
        _DECOMMISSION,
        {"tenant": caller.tenant, "device": device, "reason": reason, "by": caller.subject},
    )
    out = await _one(conn, state, device)
    assert out is not None
    return out


# ---- the tenant's policy for unregistered devices -----------------------------------------------
@router.get("/device-policy", response_model=DevicePolicyOut, summary="Unregistered devices policy")
async def get_policy(conn: TenantDB) -> DevicePolicyOut:
    """Whether flows accept readings of unregistered devices (accept unless set otherwise)."""
    cur = await conn.execute("SELECT unregistered, updated_at, updated_by FROM device_policies")
    row = await cur.fetchone()
    return DevicePolicyOut(**row) if row else DevicePolicyOut(unregistered="accept")


@router.put("/device-policy", response_model=DevicePolicyOut, summary="Set the policy")
async def put_policy(conn: TenantDB, caller: Admin, body: DevicePolicyIn) -> DevicePolicyOut:
    """Accept or reject readings of unregistered devices (flows follow within their refresh)."""
    await conn.execute(
        "INSERT INTO device_policies AS p (tenant, unregistered, updated_by)"
        " VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant) DO UPDATE SET unregistered = EXCLUDED.unregistered,"
        " updated_by = EXCLUDED.updated_by, updated_at = now()"
        " WHERE p.unregistered IS DISTINCT FROM EXCLUDED.unregistered",
        (caller.tenant, body.unregistered, caller.subject),
    )
    return await get_policy(conn)
