"""Flows of the caller's tenant: define, list, show, start, stop, restart, delete.

>>> import httpx
>>> httpx.post("http://127.0.0.1:8000/flows", headers={"X-API-Key": "sfk_...admin..."},
...            json={"name": "plant-sim", "config": {"sources": [{"type": "simulator"}]}},
...            )  # doctest: +SKIP
>>> sorted({r.path for r in router.routes})
['/flows', '/flows/{name}', '/flows/{name}/restart', '/flows/{name}/start', '/flows/{name}/stop']

Reading needs the viewer role, everything else admin. A config is
validated as :class:`schemas.config.PipelineConfig` (422 naming each bad
field) and stored with ``tenant`` and ``decode.default_tenant`` set to the
caller's tenant:

>>> config = _validated({"sources": [{"type": "simulator"}]}, "plant-a")
>>> config["tenant"], config["decode"]["default_tenant"], config["sources"][0]["type"]
('plant-a', 'plant-a', 'simulator')

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

from api.deps import Admin, TenantDB, Viewer
from api.params import storable_json
from flows.config import PipelineConfig
from schemas.config import format_validation_error

router = APIRouter(tags=["flows"])

FlowName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
_COLUMNS = (
    "name, desired, status, generation, pids, started_at, restarts, last_error, created_at,"
    " updated_at, config"
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
    config: dict[str, Any] | None = Field(None, description="In GET /flows/{name} only.")


def _out(row: dict[str, Any], with_config: bool = False) -> FlowOut:
    running = row["status"] == "running" and row["started_at"] is not None
    uptime = (datetime.now(UTC) - row["started_at"]).total_seconds() if running else None
    fields = {k: v for k, v in row.items() if k != "config"}
    return FlowOut(**fields, uptime_s=uptime, config=row["config"] if with_config else None)


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
    return _out(row, with_config=True)


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
    """Delete a flow; its process is stopped (its files stay on disk)."""
    cur = await conn.execute("DELETE FROM flows WHERE name = %s", (name,))
    if cur.rowcount == 0:
        raise HTTPException(404, f"no flow {name!r}")
