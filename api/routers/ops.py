"""Operations: liveness, readiness and Prometheus metrics (no authentication).

>>> import httpx
>>> httpx.get("http://127.0.0.1:8000/readyz").json()  # doctest: +SKIP
{'status': 'ok', 'checks': {'database': 'ok', 'kafka': 'ok'}}
>>> [r.path for r in router.routes]
['/healthz', '/readyz', '/metrics']
>>> asyncio.run(healthz())                 # liveness checks nothing but the process
Health(status='ok', checks={})
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from api.deps import State
from api.models import Health
from connectors.runtime.metrics import render

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """200 while the process serves requests."""
    return Health(status="ok")


async def _check(probe: asyncio.Future[None] | None, timeout: float) -> str:
    if probe is None:
        return "not configured"
    try:
        await asyncio.wait_for(probe, timeout)
        return "ok"
    except Exception as exc:  # any failure means "not ready"; say which
        return f"unavailable: {type(exc).__name__}: {exc}"[:300]


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness",
    responses={503: {"model": Health, "description": "Database or Kafka unreachable."}},
)
async def readyz(state: State) -> Response:
    """200 when the database and Kafka answer, 503 (with the failing checks) otherwise."""
    db = asyncio.ensure_future(state.db.ping())
    timeout = state.settings.api_kafka_timeout_s
    kafka = asyncio.ensure_future(state.producer.ping(timeout)) if state.producer else None
    checks = {
        "database": await _check(db, 5.0),
        "kafka": await _check(kafka, timeout + 1.0),
    }
    ok = all(v == "ok" for v in checks.values())
    health = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(health.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def metrics() -> PlainTextResponse:
    """Every counter and gauge of this process, in the Prometheus text format."""
    return PlainTextResponse(render(), media_type="text/plain; version=0.0.4")
