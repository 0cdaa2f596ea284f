"""The StreamForge REST API: ``uvicorn api.main:app`` (docs at /docs, schema at /openapi.json).

>>> from fastapi.testclient import TestClient
>>> TestClient(create_app(ApiSettings())).get("/healthz").json()   # start-up not run
{'status': 'ok', 'checks': {}}
>>> with TestClient(create_app(ApiSettings())) as client:  # doctest: +SKIP
...     client.get("/readyz").json()                      # start-up needs the database
{'status': 'ok', 'checks': {'database': 'ok', 'kafka': 'ok'}}

On start it applies pending migrations, grants the API database role its
rights (``schemas/sql/004_api.sql``) and refuses to start if that role is
missing; it creates the Kafka topics it writes when they are missing and
carries on without Kafka if the broker is down (``/readyz`` then says so,
and ingest and alarm actions answer 503 until it is back).
See ``api/README.md`` for the endpoints, authentication and examples.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from api.console import STATIC_DIR
from api.db import Database
from api.deps import AppState
from api.flows import FlowSupervisor
from api.kafka import AsyncProducer
from api.routers import (
    alarms,
    console,
    devices,
    events,
    flows,
    ingest,
    keys,
    live,
    ops,
    readings,
)
from api.settings import ApiSettings
from connectors.runtime.logs import get_logger
from flows.config import load_pipeline_config
from schemas.config import ConfigError, DecodeConfig

log = get_logger("api.main")

_UNSTORABLE = (psycopg.errors.UntranslatableCharacter, psycopg.errors.CharacterNotInRepertoire)
"""Server errors for text PostgreSQL cannot hold (``\\u0000`` in jsonb, bad encoding)."""


def _pipeline_settings(state: AppState) -> None:
    """Decode limits and manually clearable rules from the pipeline config, if it loads."""
    rules = set(state.settings.api_manual_clear_rules)
    decode = DecodeConfig()
    try:
        config = load_pipeline_config()
        rules |= {rule.name for rule in config.alarms if rule.manual_clear}
        decode = config.decode
    except ConfigError as exc:
        log.warning("pipeline config not loaded; using defaults", extra={"error": str(exc)})
    state.manual_clear_rules = frozenset(rules)
    state.extras["decode_config"] = decode


async def _start(state: AppState) -> None:
    settings = state.settings
    await asyncio.to_thread(state.db.prepare, settings.api_migrate)
    await state.db.open()
    async with state.db.anonymous() as conn:
        cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        state.extras["timescaledb"] = await cur.fetchone() is not None
    producer = AsyncProducer(
        settings.kafka_bootstrap_servers, linger_ms=settings.api_kafka_linger_ms
    )
    try:
        topics = [
            settings.raw_topic,
            settings.alarms_topic,
            settings.alarm_actions_topic,
            settings.dead_letters_topic,
        ]
        await asyncio.to_thread(producer.ensure_topics, topics, 3, settings.api_kafka_timeout_s)
    except Exception as exc:  # Kafka down at start: serve reads; /readyz tells
        log.warning("kafka topics not checked", extra={"error": str(exc)})
    state.producer = producer
    if settings.api_supervise_flows:
        supervisor = FlowSupervisor(
            settings.database_url,
            settings.api_flows_dir,
            keep_flows=settings.api_flows_outlive_api,
        )
        supervisor.start()
        state.extras["supervisor"] = supervisor


class StreamForgeApp(FastAPI):
    """FastAPI, with ``POST /ingest`` answered before FastAPI's own per-request work.

    ``FastAPI.__call__`` asks OpenTelemetry whether tracing is configured
    (providers, environment) and runs the error and body-limit middleware
    on every request: on a single-reading ingest that is a sizeable part of
    the request's cost. :func:`api.routers.ingest.serve_ingest` needs none of it
    (it answers every error itself); everything else goes through FastAPI.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``POST /ingest`` at once; anything else as FastAPI does."""
        if scope["type"] == "http" and scope["path"] == "/ingest" and scope["method"] == "POST":
            await ingest.serve_ingest(self.state.streamforge, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """A new API application (tests build one per database)."""
    settings = settings or ApiSettings()
    state = AppState(
        settings=settings,
        db=Database(
            settings.database_url,
            role=settings.api_db_role,
            min_size=settings.api_pool_min,
            max_size=settings.api_pool_max,
        ),
    )
    _pipeline_settings(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _start(state)
        log.info("api started", extra={"step": "start", "timescaledb": state.extras["timescaledb"]})
        try:
            yield
        finally:
            supervisor = state.extras.get("supervisor")
            if supervisor is not None:
                await supervisor.stop()
            if state.producer is not None:
                await asyncio.to_thread(state.producer.close)
            await state.db.close()

    app = StreamForgeApp(
        title="StreamForge API",
        version="1",
        summary="Devices, readings, rollups, events and alarms of your plant; HTTP ingest.",
        lifespan=lifespan,
    )
    app.state.streamforge = state
    for module in (ops, devices, readings, events, alarms, ingest, keys, flows):
        app.include_router(module.router)
    # The operator console: its page at /, its data and live stream, its files.
    for module in (console, live):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's list of errors, plus one line naming each bad parameter.
        errors = exc.errors()
        message = "; ".join(
            f"{' '.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in errors
        )
        detail = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
        return JSONResponse({"message": message, "detail": detail}, status_code=422)

    @app.exception_handler(psycopg.DataError)
    async def unstorable_text(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Safety net behind the validation of parameters and bodies
        # (api/params.py): text PostgreSQL cannot hold is the client's
        # mistake, a 422, not a server error. Any other data error still is.
        if isinstance(exc, _UNSTORABLE) or "NUL (0x00)" in str(exc):
            message = f"text the database cannot store: {exc}"
            return JSONResponse({"message": message, "detail": []}, status_code=422)
        raise exc

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["IngestReading"] = (
                ingest.READING_SCHEMA
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


app = create_app()
"""The application ``uvicorn api.main:app`` serves (settings from the environment)."""
