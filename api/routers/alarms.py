"""Alarms: list and inspect them, acknowledge, shelve and clear them, and their KPIs.

>>> import httpx
>>> httpx.post("http://127.0.0.1:8000/alarms/0f0e.../acknowledge",
...            json={"comment": "on it"}, headers={"X-API-Key": "sfk_..."})  # doctest: +SKIP
>>> [(r.path, *r.methods) for r in router.routes]
[('/alarms', 'GET'), ('/alarms/kpis', 'GET'), ('/alarms/{alarm_id}', 'GET'),
 ('/alarms/{alarm_id}/acknowledge', 'POST'), ('/alarms/{alarm_id}/shelve', 'POST'),
 ('/alarms/{alarm_id}/unshelve', 'POST'), ('/alarms/{alarm_id}/clear', 'POST')]

An action is one more transition of the alarm (``seq`` + 1, as
:mod:`flows.alarm_lifecycle` numbers them): the ``alarms`` row is updated
and the transition added to ``alarm_transitions`` in one transaction, which
commits only after Kafka acknowledged the same :class:`schemas.models.Alarm`
on the alarms topic (key ``tenant/device``, header ``schema-version``), so
alert consumers see acknowledgements and clears, and on the operator actions
topic, which flows follow so that their own next transition of the alarm is
numbered after it (:mod:`flows.alarm_lifecycle`). Kafka unavailable: 503 and
nothing changes. A transition the alarm's state does not allow: 409.

Acknowledge: only a ``raised`` alarm. Shelve (ISA-18.2): a ``raised`` or
``acknowledged`` alarm, for at most ``STREAMFORGE_API_MAX_SHELVE_MINUTES``
(default 480) with a reason; the flow then keeps the alarm's series and rule
quiet until then (event time: new raises are held, and the alarm comes back
as ``unshelved`` if still active; see :mod:`flows.alarm_lifecycle`).
Unshelve: a ``shelved`` alarm, at once. Flood alarms end by themselves: no
action applies to them (409). Clear: a ``raised``, ``acknowledged`` or
``shelved`` alarm whose rule allows it: every ``device`` and
``anomaly`` alarm (the device or detector may be wrong, the operator knows),
and ``threshold`` alarms of rules with ``manual_clear: true`` in the pipeline
config (``STREAMFORGE_CONFIG``) or in one of the tenant's API-managed flows,
or named in ``STREAMFORGE_API_MANUAL_CLEAR_RULES``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from psycopg import sql
from psycopg.types.json import Jsonb

from api.deps import Operator, State, TenantDB
from api.kafka import Headers, KafkaUnavailableError
from api.models import (
    AcknowledgeIn,
    AlarmDetail,
    AlarmKpis,
    AlarmOut,
    ClearIn,
    Page,
    RankedCount,
    ShelveIn,
)
from api.params import (
    TEXT_PATTERN,
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
from schemas.models import SCHEMA_VERSION, Alarm, to_json

router = APIRouter(tags=["alarms"])

_COLUMNS = (
    "id, seq, tenant, device, metric, rule, kind, severity, state, transition, ts, raised_at,"
    " value, threshold, message, acknowledged_at, acknowledged_by, cleared_at, comment,"
    " priority, shelved_until, chattering"
)
AlarmId = Annotated[str, Path(min_length=1, max_length=100, pattern=TEXT_PATTERN)]
StateFilter = Annotated[
    Literal["active", "raised", "acknowledged", "shelved", "cleared"] | None,
    Query(description="active = raised or acknowledged (shelved alarms are listed apart)."),
]
SeverityFilter = Annotated[
    list[Literal["info", "warning", "major", "critical"]] | None,
    Query(description="One or more severities (repeat the parameter)."),
]


@router.get("/alarms", response_model=Page[AlarmOut], summary="List alarms")
async def list_alarms(
    conn: TenantDB,
    rng: Annotated[TimeRange, Depends(time_range)],
    state: StateFilter = None,
    severity: SeverityFilter = None,
    device: OptionalName = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AlarmOut]:
    """Alarms raised in ``[start, end)``, newest first, by state, severity and device."""
    parts: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {"limit": limit + 1}
    if state == "active":
        parts.append(sql.SQL("state IN ('raised', 'acknowledged')"))
    elif state is not None:
        parts.append(sql.SQL("state = %(state)s"))
        params["state"] = state
    if severity:
        parts.append(sql.SQL("severity = ANY(%(severity)s)"))
        params["severity"] = list(severity)
    if device is not None:
        parts.append(sql.SQL("device = %(device)s"))
        params["device"] = device
    if rng.start is not None:
        parts.append(sql.SQL("raised_at >= %(start)s"))
        params["start"] = rng.start
    if rng.end is not None:
        parts.append(sql.SQL("raised_at < %(end)s"))
        params["end"] = rng.end
    if cursor is not None:
        position = decode_cursor(cursor)
        params["c_ts"], params["c_id"] = cursor_time(position, "t"), position.get("i")
        if not isinstance(params["c_id"], str):
            raise invalid("cursor", "not a cursor returned by this API", cursor)
        parts.append(sql.SQL("(raised_at, id) < (%(c_ts)s, %(c_id)s)"))
    query = sql.SQL(
        "SELECT " + _COLUMNS + " FROM alarms WHERE {} ORDER BY raised_at DESC, id DESC"
        " LIMIT %(limit)s"
    ).format(sql.SQL(" AND ").join(parts))
    rows = await (await conn.execute(query, params)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        next_cursor = encode_cursor({"t": rows[-1]["raised_at"].isoformat(), "i": rows[-1]["id"]})
    return Page[AlarmOut](items=[AlarmOut(**r) for r in rows], next_cursor=next_cursor)


_KPIS = """
WITH raises AS (
    SELECT device, rule, kind, ts, chattering FROM alarm_transitions
    WHERE transition = 'raised' AND ts >= %(start)s AND ts < %(end)s
)
SELECT
    (SELECT count(*) FROM raises WHERE kind <> 'flood') AS raises,
    (SELECT count(*) FROM raises WHERE kind = 'flood') AS floods,
    (SELECT count(*) FROM raises WHERE chattering) AS chattering,
    (SELECT coalesce(max(n), 0) FROM (
        SELECT count(*) AS n FROM raises WHERE kind <> 'flood'
        GROUP BY date_bin('10 minutes', ts, TIMESTAMPTZ '2000-01-01')) AS b) AS peak,
    (SELECT count(*) FROM alarms WHERE state IN ('raised', 'acknowledged')) AS active,
    (SELECT count(*) FROM alarms WHERE state = 'shelved') AS shelved,
    (SELECT count(*) FROM alarms WHERE state IN ('raised', 'acknowledged')
        AND raised_at < %(end)s - interval '24 hours') AS standing
"""
_TOP = (
    "SELECT {column} AS name, count(*) AS raises FROM alarm_transitions"
    " WHERE transition = 'raised' AND kind <> 'flood' AND ts >= %(start)s AND ts < %(end)s"
    " GROUP BY {column} ORDER BY raises DESC, name LIMIT 10"
)


@router.get("/alarms/kpis", response_model=AlarmKpis, summary="Alarm KPIs")
async def alarm_kpis(conn: TenantDB, rng: Annotated[TimeRange, Depends(time_range)]) -> AlarmKpis:
    """Raise rates, peak, floods, standing, shelved and chattering alarms, noisiest rules
    and devices, over ``[start, end)`` (default: the last 24 hours)."""
    end = rng.end or datetime.now(UTC)
    start = rng.start or end - timedelta(hours=24)
    if start >= end:
        raise invalid("start", "must be before end", start.isoformat())
    params = {"start": start, "end": end}
    row = await (await conn.execute(_KPIS, params)).fetchone()
    assert row is not None
    tops = {}
    for column in ("rule", "device"):
        query = sql.SQL(_TOP).format(column=sql.Identifier(column))
        tops[column] = [
            RankedCount(**r) for r in await (await conn.execute(query, params)).fetchall()
        ]
    hours = (end - start).total_seconds() / 3600
    return AlarmKpis(
        start=start,
        end=end,
        raises=row["raises"],
        raises_per_hour=row["raises"] / hours,
        raises_per_10_minutes_avg=row["raises"] / (hours * 6),
        peak_per_10_minutes=row["peak"],
        floods=row["floods"],
        active=row["active"],
        shelved=row["shelved"],
        standing=row["standing"],
        chattering=row["chattering"],
        top_rules=tops["rule"],
        top_devices=tops["device"],
    )


@router.get("/alarms/{alarm_id}", response_model=AlarmDetail, summary="One alarm and its history")
async def get_alarm(conn: TenantDB, alarm_id: AlarmId) -> AlarmDetail:
    """An alarm's current state and every transition, oldest first; 404 if not the caller's."""
    cur = await conn.execute("SELECT " + _COLUMNS + " FROM alarms WHERE id = %s", (alarm_id,))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no alarm {alarm_id!r}")
    cur = await conn.execute(
        "SELECT alarm_id AS id, seq, tenant, device, metric, rule, kind, severity, state,"
        " transition, ts, raised_at, value, threshold, message, acknowledged_at,"
        " acknowledged_by, cleared_at, comment, priority, shelved_until, chattering"
        " FROM alarm_transitions WHERE alarm_id = %s ORDER BY seq",
        (alarm_id,),
    )
    transitions = [AlarmOut(**r) for r in await cur.fetchall()]
    return AlarmDetail(**row, transitions=transitions)


def _record(row: dict[str, Any]) -> Alarm:
    fields = {k: v for k, v in row.items() if k in Alarm.__dataclass_fields__}
    return Alarm(**fields)


def clear_allowed(state: State, alarm: Alarm) -> bool:
    """Whether operators may clear this alarm by hand (see the module docstring)."""
    return alarm.kind in ("device", "anomaly") or alarm.rule in state.manual_clear_rules


async def _flow_allows_clear(conn: psycopg.AsyncConnection[Any], rule: str) -> bool:
    """Whether one of the tenant's API-managed flows has this rule with ``manual_clear: true``."""
    cur = await conn.execute(
        "SELECT 1 FROM flows, jsonb_array_elements(config->'alarms') AS a"
        " WHERE a->>'name' = %s AND a->>'manual_clear' = 'true' LIMIT 1",
        (rule,),
    )
    return await cur.fetchone() is not None


_UPDATE = (
    "UPDATE alarms SET seq = %(seq)s, severity = %(severity)s, state = %(state)s,"
    " transition = %(transition)s, ts = %(ts)s, value = %(value)s, threshold = %(threshold)s,"
    " message = %(message)s, acknowledged_at = %(acknowledged_at)s,"
    " acknowledged_by = %(acknowledged_by)s, cleared_at = %(cleared_at)s, comment = %(comment)s,"
    " shelved_until = %(shelved_until)s WHERE id = %(id)s"
)
_INSERT = (
    "INSERT INTO alarm_transitions (alarm_id, seq, tenant, device, metric, rule, kind, severity,"
    " state, transition, ts, raised_at, value, threshold, message, acknowledged_at,"
    " acknowledged_by, cleared_at, comment, priority, shelved_until, chattering)"
    " VALUES (%(id)s, %(seq)s, %(tenant)s, %(device)s,"
    " %(metric)s, %(rule)s, %(kind)s, %(severity)s, %(state)s, %(transition)s, %(ts)s,"
    " %(raised_at)s, %(value)s, %(threshold)s, %(message)s, %(acknowledged_at)s,"
    " %(acknowledged_by)s, %(cleared_at)s, %(comment)s, %(priority)s, %(shelved_until)s,"
    " %(chattering)s)"
)


async def _apply(state: State, tenant: str, alarm_id: str, action: str, by: str,
                 comment: str | None, minutes: float | None = None) -> AlarmOut:  # fmt: skip
    try:
        async with state.db.tenant(tenant) as conn:
            cur = await conn.execute(
                "SELECT " + _COLUMNS + " FROM alarms WHERE id = %s FOR UPDATE", (alarm_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise HTTPException(404, f"no alarm {alarm_id!r}")
            alarm = _record(row)
            now = datetime.now(UTC)
            if alarm.kind == "flood":
                raise HTTPException(409, "a flood alarm ends by itself; no action applies to it")
            if action == "shelve":
                if alarm.state not in ("raised", "acknowledged"):
                    raise HTTPException(
                        409, f"alarm is {alarm.state}; only an active alarm can be shelved"
                    )
                assert minutes is not None
                alarm.state, alarm.transition = "shelved", "shelved"
                alarm.shelved_until = now + timedelta(minutes=minutes)
                alarm.acknowledged_at = alarm.acknowledged_by = None
            elif action == "unshelve":
                if alarm.state != "shelved":
                    raise HTTPException(409, f"alarm is {alarm.state}, not shelved")
                alarm.state, alarm.transition = "raised", "unshelved"
                alarm.shelved_until = None
            elif action == "acknowledge":
                if alarm.state != "raised":
                    raise HTTPException(
                        409, f"alarm is {alarm.state}; only a raised alarm can be acknowledged"
                    )
                alarm.state = alarm.transition = "acknowledged"
                alarm.acknowledged_at, alarm.acknowledged_by = now, by
                alarm.cleared_at = None
            else:
                if alarm.state == "cleared":
                    raise HTTPException(409, "alarm is already cleared")
                if not clear_allowed(state, alarm) and not await _flow_allows_clear(
                    conn, alarm.rule
                ):
                    raise HTTPException(
                        409, f"alarm rule {alarm.rule!r} does not allow manual clear"
                    )
                alarm.state = alarm.transition = "cleared"
                alarm.cleared_at = now
                alarm.message = f"cleared manually by {by}" + (f": {comment}" if comment else "")
            if comment is not None:
                alarm.comment = comment
            if action == "clear":
                alarm.shelved_until = None
            alarm.seq += 1
            alarm.ts = now
            values = {f: getattr(alarm, f) for f in Alarm.__dataclass_fields__}
            values["value"] = Jsonb(alarm.value) if alarm.value is not None else None
            await conn.execute(_UPDATE, values)
            await conn.execute(_INSERT, values)
            if state.producer is None:
                raise HTTPException(503, "Kafka is not configured; alarm actions need it")
            headers: Headers = [
                ("schema-version", str(SCHEMA_VERSION).encode()),
                ("kind", b"alarm"),
            ]
            message = [(f"{alarm.tenant}/{alarm.device}".encode(), to_json(alarm), headers)]
            # Inside the transaction: a transition Kafka did not take is rolled back.
            # Alert consumers read the alarms topic; flows follow the actions topic
            # (connectors.kafka.alarm_actions), so their next transition comes after this one.
            await asyncio.gather(
                state.producer.send(state.settings.alarms_topic, message),
                state.producer.send(state.settings.alarm_actions_topic, message),
            )
    except KafkaUnavailableError as exc:
        raise HTTPException(503, f"Kafka did not take the alarm transition: {exc}") from exc
    except psycopg.OperationalError as exc:
        raise HTTPException(503, f"database unavailable: {exc}") from exc
    return AlarmOut(**{f: getattr(alarm, f) for f in AlarmOut.model_fields})


@router.post(
    "/alarms/{alarm_id}/acknowledge",
    response_model=AlarmOut,
    summary="Acknowledge an alarm",
    responses={409: {"description": "The alarm is not raised (already acknowledged or cleared)."}},
)
async def acknowledge(
    state: State, caller: Operator, alarm_id: AlarmId, body: AcknowledgeIn | None = None
) -> AlarmOut:
    """Acknowledge a raised alarm (operator role); ``by`` defaults to the caller."""
    body = body or AcknowledgeIn()
    return await _apply(
        state, caller.tenant, alarm_id, "acknowledge", body.by or caller.subject, body.comment
    )


@router.post(
    "/alarms/{alarm_id}/shelve",
    response_model=AlarmOut,
    summary="Shelve an alarm for a while",
    responses={409: {"description": "The alarm is not active, or is a flood alarm."}},
)
async def shelve(state: State, caller: Operator, alarm_id: AlarmId, body: ShelveIn) -> AlarmOut:
    """Shelve an active alarm for ``minutes`` with a reason (operator role); it comes back by
    itself then if its condition is still there."""
    limit = state.settings.api_max_shelve_minutes
    if body.minutes > limit:
        raise HTTPException(422, f"minutes: at most {limit:g} (STREAMFORGE_API_MAX_SHELVE_MINUTES)")
    return await _apply(
        state, caller.tenant, alarm_id, "shelve", body.by or caller.subject, body.comment,
        body.minutes,
    )  # fmt: skip


@router.post(
    "/alarms/{alarm_id}/unshelve",
    response_model=AlarmOut,
    summary="Unshelve an alarm now",
    responses={409: {"description": "The alarm is not shelved."}},
)
async def unshelve(
    state: State, caller: Operator, alarm_id: AlarmId, body: AcknowledgeIn | None = None
) -> AlarmOut:
    """Bring a shelved alarm back at once (operator role)."""
    body = body or AcknowledgeIn()
    return await _apply(
        state, caller.tenant, alarm_id, "unshelve", body.by or caller.subject, body.comment
    )


@router.post(
    "/alarms/{alarm_id}/clear",
    response_model=AlarmOut,
    summary="Clear an alarm by hand",
    responses={409: {"description": "Already cleared, or its rule does not allow manual clear."}},
)
async def clear(
    state: State, caller: Operator, alarm_id: AlarmId, body: ClearIn | None = None
) -> AlarmOut:
    """Clear a raised or acknowledged alarm whose rule allows it (operator role)."""
    body = body or ClearIn()
    return await _apply(
        state, caller.tenant, alarm_id, "clear", body.by or caller.subject, body.comment
    )
