"""Flows of the caller's tenant: define, change, list, show, start, stop, restart, delete.

>>> import httpx
>>> httpx.post("http://127.0.0.1:8000/flows", headers={"X-API-Key": "sfk_...admin..."},
...            json={"name": "plant-sim", "config": {"sources": [{"type": "simulator"}]}},
...            )  # doctest: +SKIP
>>> for path in sorted({r.path for r in router.routes}):
...     print(path)
/flows
/flows/{name}
/flows/{name}/restart
/flows/{name}/rollback
/flows/{name}/start
/flows/{name}/stop
/flows/{name}/versions
/flows/{name}/versions/{version}

Reading needs the viewer role, everything else admin. A config is
validated as :class:`schemas.config.PipelineConfig` (422 naming each bad
field) and stored with ``tenant`` and ``decode.default_tenant`` set to the
caller's tenant:

>>> config = _validated({"sources": [{"type": "simulator"}]}, "plant-a")
>>> config["tenant"], config["decode"]["default_tenant"], config["sources"][0]["type"]
('plant-a', 'plant-a', 'simulator')

**Config versions.** Every config a flow is given is kept as a version
with who gave it (the API key's subject), when, an optional reason and what
it changed (:func:`api.config_versions.config_diff`): version 1 at
creation, a new one for each ``PUT /flows/{name}`` (a whole config),
``PATCH /flows/{name}`` (a JSON merge patch of ``{"config": ...}``) and
``POST /flows/{name}/rollback`` (an earlier version's config, as a new
version: the history is never rewritten). ``GET /flows/{name}/versions``
lists them. A change to a running flow restarts its process from its
recovery store, and each series reconciles its state with the new config
(:mod:`flows.series`). A change that alters the flow's shape (its sources,
sinks, topology or series buckets: Bytewax cannot resume a store made by
another shape) is refused with 409 unless the body says
``"fresh_state": true``; the flow then starts from an empty store (the old
one is archived beside it).

Start, stop and restart record the wish and answer 202;
the supervisor (:mod:`api.flows`) acts within about a second and the
status (``running`` / ``stopped`` / ``crashed``, pids, uptime, restarts,
last error) comes from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from api.config_versions import config_diff, merge_patch
from api.deps import Admin, TenantDB, Viewer
from api.params import storable_json
from flows.config import PipelineConfig
from schemas.config import format_validation_error

router = APIRouter(tags=["flows"])

FlowName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
_COLUMNS = (
    "name, desired, status, generation, pids, started_at, restarts, last_error, created_at,"
    " updated_at, config, config_version, state_epoch"
)


class FlowIn(BaseModel):
    """A new flow: a name (lower case, digits, ``-`` and ``_``) and a pipeline config."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "name": "plant-sim",
                "config": {
                    "sources": [{"type": "simulator", "devices": 5, "rate": 20}],
                    "sinks": [{"type": "kafka"}, {"type": "timescale"}],
                },
            }
        },
    )

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    config: Annotated[dict[str, Any], AfterValidator(storable_json)] = Field(
        description="A pipeline config (see deploy/pipeline.sample.yaml)."
    )
    start: bool = Field(False, description="Start it at once.")


class FlowOut(BaseModel):
    """A flow: what is wanted (``desired``) and what runs (the rest, from the supervisor)."""

    name: str
    desired: Literal["running", "stopped"]
    status: Literal["running", "stopped", "crashed"]
    generation: int
    pids: list[int]
    started_at: datetime | None
    uptime_s: float | None = Field(description="Seconds since the process started, if running.")
    restarts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    config_version: int = Field(description="The version of the config the flow is given.")
    state_epoch: int = Field(
        description="Counts fresh starts: a config with another shape starts a new recovery store."
    )
    config: dict[str, Any] | None = Field(None, description="In GET /flows/{name} only.")


class FlowChange(BaseModel):
    """A new config for a flow (PUT: the whole config; PATCH: a JSON merge patch of it)."""

    model_config = ConfigDict(extra="forbid")

    config: Annotated[dict[str, Any], AfterValidator(storable_json)]
    reason: str | None = Field(None, max_length=1000, description="Kept with the version.")
    fresh_state: bool = Field(
        False,
        description="Allow a change of the flow's shape (sources, sinks, topology, series "
        "buckets): the flow restarts from an empty recovery store (the old one is archived).",
    )


class Rollback(BaseModel):
    """Go back to an earlier version's config (as a new version)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    reason: str | None = Field(None, max_length=1000)
    fresh_state: bool = False


class VersionOut(BaseModel):
    """One config version of a flow: who, when, why, what changed."""

    version: int
    author: str
    reason: str | None
    created_at: datetime
    diff: list[dict[str, Any]] = Field(description="Changed fields: {path, old, new}.")
    config: dict[str, Any] | None = Field(None, description="In GET .../versions/{v} only.")


def _out(row: dict[str, Any], with_config: bool = False) -> FlowOut:
    running = row["status"] == "running" and row["started_at"] is not None
    uptime = (datetime.now(UTC) - row["started_at"]).total_seconds() if running else None
    fields = {k: v for k, v in row.items() if k != "config"}
    return FlowOut(**fields, uptime_s=uptime, config=row["config"] if with_config else None)


def flow_shape(config: dict[str, Any]) -> dict[str, Any]:
    """What a flow's recovery store depends on: its steps' inputs, outputs and keys.

    >>> base = _validated({"sources": [{"type": "simulator"}]}, "t")
    >>> flow_shape(base) == flow_shape({**base, "anomaly": {"threshold": 0.5}})
    True
    >>> flow_shape(base) == flow_shape({**base, "sinks": [{"type": "null"}]})
    False
    """
    parsed = PipelineConfig.model_validate(config)
    return {
        "topology": parsed.topology,
        "sources": [(s.type, s.name) for s in parsed.ingest_sources()],
        "operator_actions": parsed.follows_operator_actions(),
        "sinks": [(s.type, sorted(s.kinds)) for s in parsed.sinks],
        "series_buckets": parsed.series_buckets,
        "flood": parsed.alarm_management.flood.enabled,
    }


def _validated(config: dict[str, Any], tenant: str) -> dict[str, Any]:
    data = {**config, "tenant": tenant}
    data["decode"] = {**(data.get("decode") or {}), "default_tenant": tenant}
    try:
        return PipelineConfig.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        raise HTTPException(422, format_validation_error(exc, "(request body)")) from exc


@router.get("/flows", response_model=list[FlowOut], summary="List flows")
async def list_flows(conn: TenantDB, caller: Viewer) -> list[FlowOut]:
    """Every flow of the caller's tenant with its status."""
    cur = await conn.execute("SELECT " + _COLUMNS + " FROM flows ORDER BY name")
    return [_out(row) for row in await cur.fetchall()]


@router.post("/flows", response_model=FlowOut, status_code=201, summary="Create a flow")
async def create_flow(conn: TenantDB, caller: Admin, body: FlowIn) -> FlowOut:
    """Store a validated flow (stopped unless ``start``); 409 if the name is taken."""
    config = _validated(body.config, caller.tenant)
    try:
        cur = await conn.execute(
            "INSERT INTO flows (tenant, name, config, desired) VALUES (%s, %s, %s, %s)"
            " RETURNING " + _COLUMNS,
            (caller.tenant, body.name, Jsonb(config), "running" if body.start else "stopped"),
        )
    except UniqueViolation as exc:
        raise HTTPException(409, f"flow {body.name!r} exists") from exc
    row = await cur.fetchone()
    assert row is not None
    # A flow deleted earlier under this name keeps its versions: this one goes on from them.
    cur = await conn.execute(
        "SELECT coalesce(max(version), 0) + 1 AS version FROM flow_config_versions WHERE flow = %s",
        (body.name,),
    )
    version_row = await cur.fetchone()
    assert version_row is not None
    version = version_row["version"]
    await conn.execute(
        "INSERT INTO flow_config_versions (tenant, flow, version, config, author, reason)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (caller.tenant, body.name, version, Jsonb(config), caller.subject, "created"),
    )
    cur = await conn.execute(
        "UPDATE flows SET config_version = %s WHERE name = %s RETURNING " + _COLUMNS,
        (version, body.name),
    )
    row = await cur.fetchone()
    assert row is not None
    return _out(row, with_config=True)


async def _change(
    conn: TenantDB,
    caller: Admin,
    name: str,
    config: dict[str, Any],
    reason: str | None,
    fresh_state: bool,
) -> FlowOut:
    """Store ``config`` as the flow's next version and apply it (a restart if it runs)."""
    cur = await conn.execute(
        "SELECT " + _COLUMNS + " FROM flows WHERE name = %s FOR UPDATE", (name,)
    )
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no flow {name!r}")
    config = _validated(config, caller.tenant)
    diff = config_diff(row["config"], config)
    if not diff:
        return _out(row, with_config=True)  # nothing changes: no new version
    reshaped = flow_shape(row["config"]) != flow_shape(config)
    if reshaped and not fresh_state:
        changed = sorted(
            k for k, v in flow_shape(config).items() if flow_shape(row["config"])[k] != v
        )
        raise HTTPException(
            409,
            f"this change alters the flow's shape ({', '.join(changed)}): its recovery store "
            'cannot be resumed; send it again with "fresh_state": true to start the flow '
            "from an empty store (the old one is archived)",
        )
    cur = await conn.execute(
        "SELECT max(version) AS version FROM flow_config_versions WHERE flow = %s", (name,)
    )
    last = await cur.fetchone()
    version = (last["version"] if last and last["version"] else row["config_version"]) + 1
    await conn.execute(
        "INSERT INTO flow_config_versions (tenant, flow, version, config, author, reason, diff)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (caller.tenant, name, version, Jsonb(config), caller.subject, reason, Jsonb(diff)),
    )
    cur = await conn.execute(
        "UPDATE flows SET config = %s, config_version = %s, updated_at = now(),"
        " generation = generation + CASE WHEN desired = 'running' THEN 1 ELSE 0 END,"
        " state_epoch = state_epoch + %s"
        " WHERE name = %s RETURNING " + _COLUMNS,
        (Jsonb(config), version, 1 if reshaped else 0, name),
    )
    row = await cur.fetchone()
    assert row is not None
    return _out(row, with_config=True)


@router.put("/flows/{name}", response_model=FlowOut, summary="Give a flow a new config")
async def put_flow(conn: TenantDB, caller: Admin, name: FlowName, body: FlowChange) -> FlowOut:
    """Validate the whole config, store it as a new version and apply it.

    A running flow restarts from its recovery store with it (its series
    reconcile their state with the new config). Nothing changes, and no
    version is added, when the config equals the current one.
    """
    return await _change(conn, caller, name, body.config, body.reason, body.fresh_state)


@router.patch("/flows/{name}", response_model=FlowOut, summary="Change part of a flow's config")
async def patch_flow(
    conn: TenantDB, caller: Admin, name: FlowName, body: dict[str, Any]
) -> FlowOut:
    """A JSON merge patch (RFC 7396) of ``{"config": ..., "reason": ...}``.

    ``{"config": {"anomaly": {"threshold": 0.95}}}`` changes one field;
    ``null`` removes a field (it takes its default again). Applied like PUT.
    """
    cur = await conn.execute("SELECT config FROM flows WHERE name = %s", (name,))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no flow {name!r}")
    unknown = sorted(set(body) - {"config", "reason", "fresh_state"})
    if unknown or not isinstance(body.get("config", {}), dict):
        raise HTTPException(422, f"a patch has config, reason and fresh_state only (got {unknown})")
    config = merge_patch(row["config"], body.get("config") or {})
    storable_json(config)
    return await _change(
        conn, caller, name, config, body.get("reason"), bool(body.get("fresh_state", False))
    )


@router.get("/flows/{name}/versions", response_model=list[VersionOut], summary="Config history")
async def list_versions(conn: TenantDB, caller: Viewer, name: FlowName) -> list[VersionOut]:
    """Every config version of the flow, newest first, with who, when, why and the diff."""
    cur = await conn.execute(
        "SELECT version, author, reason, created_at, diff FROM flow_config_versions"
        " WHERE flow = %s ORDER BY version DESC",
        (name,),
    )
    rows = await cur.fetchall()
    if not rows:
        raise HTTPException(404, f"no flow {name!r}")
    return [VersionOut(**r) for r in rows]


@router.get("/flows/{name}/versions/{version}", response_model=VersionOut, summary="One version")
async def get_version(conn: TenantDB, caller: Viewer, name: FlowName, version: int) -> VersionOut:
    """One config version, with its whole config."""
    cur = await conn.execute(
        "SELECT version, author, reason, created_at, diff, config FROM flow_config_versions"
        " WHERE flow = %s AND version = %s",
        (name, version),
    )
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"flow {name!r} has no version {version}")
    return VersionOut(**row)


@router.post("/flows/{name}/rollback", response_model=FlowOut, summary="Back to a version")
async def rollback_flow(conn: TenantDB, caller: Admin, name: FlowName, body: Rollback) -> FlowOut:
    """Give the flow an earlier version's config again, as a new version (history stays)."""
    cur = await conn.execute(
        "SELECT config FROM flow_config_versions WHERE flow = %s AND version = %s",
        (name, body.version),
    )
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"flow {name!r} has no version {body.version}")
    reason = body.reason or f"rollback to version {body.version}"
    return await _change(conn, caller, name, row["config"], reason, body.fresh_state)


@router.get("/flows/{name}", response_model=FlowOut, summary="One flow")
async def get_flow(conn: TenantDB, caller: Viewer, name: FlowName) -> FlowOut:
    """A flow with its config and status."""
    cur = await conn.execute("SELECT " + _COLUMNS + " FROM flows WHERE name = %s", (name,))
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no flow {name!r}")
    return _out(row, with_config=True)


_ACTIONS = {
    "start": "desired = 'running'",
    "stop": "desired = 'stopped'",
    "restart": "desired = 'running', generation = generation + 1",
}


async def _act(conn: TenantDB, name: str, action: str) -> FlowOut:
    cur = await conn.execute(
        "UPDATE flows SET " + _ACTIONS[action] + ", updated_at = now() WHERE name = %s"
        " RETURNING " + _COLUMNS,
        (name,),
    )
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no flow {name!r}")
    return _out(row)


@router.post("/flows/{name}/start", response_model=FlowOut, status_code=202)
async def start_flow(conn: TenantDB, caller: Admin, name: FlowName) -> FlowOut:
    """Ask for the flow to run (the supervisor starts it, resuming from its recovery store)."""
    return await _act(conn, name, "start")


@router.post("/flows/{name}/stop", response_model=FlowOut, status_code=202)
async def stop_flow(conn: TenantDB, caller: Admin, name: FlowName) -> FlowOut:
    """Ask for the flow to stop (SIGTERM, SIGKILL after 10 s)."""
    return await _act(conn, name, "stop")


@router.post("/flows/{name}/restart", response_model=FlowOut, status_code=202)
async def restart_flow(conn: TenantDB, caller: Admin, name: FlowName) -> FlowOut:
    """Ask for the flow's process to be replaced by a new one (and to run)."""
    return await _act(conn, name, "restart")


@router.delete("/flows/{name}", status_code=204, summary="Delete a flow")
async def delete_flow(conn: TenantDB, caller: Admin, name: FlowName) -> None:
    """Delete a flow; its process is stopped and its recovery store archived.

    Its config versions stay (the audit trail); a flow created again under
    the name starts from an empty recovery store and continues the versions.
    """
    cur = await conn.execute("DELETE FROM flows WHERE name = %s", (name,))
    if cur.rowcount == 0:
        raise HTTPException(404, f"no flow {name!r}")
