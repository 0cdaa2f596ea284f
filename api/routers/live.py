"""Server-Sent Events for the console: new alarms at once, newest values every second.

>>> [r.path for r in router.routes]
['/console/api/live']
>>> sse("alarm", {"id": "a1"})
'event: alarm\\ndata: {"id":"a1"}\\n\\n'

``GET /console/api/live`` (viewer) answers ``text/event-stream``: ``ready``
once the Kafka consumer has its partitions, then ``alarm`` (a transition of
one of the caller's tenant's alarms), ``readings`` (newest value per series
since the last one) and ``resync`` (events were dropped: reload), with a
comment line every 15 s so proxies keep the connection open. The page reads
it with ``fetch`` rather than ``EventSource``, which cannot send the
``X-API-Key`` header (a key in the URL would end up in access logs).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.console.live import LiveHub
from api.deps import AppState, State, Viewer
from api.routers.console import console_settings

router = APIRouter(tags=["console"])
KEEP_ALIVE_S = 15.0


def sse(kind: str, data: Any) -> str:
    """One Server-Sent Event."""
    return f"event: {kind}\ndata: {orjson.dumps(data).decode()}\n\n"


def live_hub(state: AppState) -> LiveHub:
    """The process's hub, created and started on the first stream."""
    hub: LiveHub | None = state.extras.get("live_hub")
    if hub is None:
        settings = console_settings()
        hub = LiveHub(
            state.settings.kafka_bootstrap_servers,
            state.settings.alarms_topic,
            settings.telemetry_topic,
            settings.tick_s,
        )
        state.extras["live_hub"] = hub
    hub.start()
    return hub


# Not in the OpenAPI schema: a stream that never ends is no use to schema-driven clients.
@router.get("/console/api/live", include_in_schema=False)
async def live(request: Request, state: State, caller: Viewer) -> StreamingResponse:
    """The caller's tenant's live events until the client goes away."""
    hub = live_hub(state)
    sub = hub.subscribe(caller.tenant)

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            told_ready, idle = False, 0.0
            while not await request.is_disconnected():
                if not told_ready and hub.ready.is_set():
                    told_ready = True
                    yield sse("ready", None)
                try:
                    kind, data = await asyncio.wait_for(sub.queue.get(), 1.0)
                except TimeoutError:
                    idle += 1.0
                    if idle >= KEEP_ALIVE_S:
                        idle = 0.0
                        yield ": keep-alive\n\n"
                    continue
                idle = 0.0
                yield sse(kind, data)
        finally:
            hub.unsubscribe(sub)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
