"""HTTP ingest: readings in, validated by the pipeline's own decoder, out to the Kafka raw topic.

>>> import httpx
>>> httpx.post("http://127.0.0.1:8000/ingest", headers={"X-API-Key": "sfk_..."},
...            json=[{"device": "press-1", "metric": "temperature", "value": 71.5},
...                  {"device": "press-1", "metric": "pressure", "value": "NaN"}],
...            ).json()  # doctest: +SKIP
{'accepted': 1, 'rejected': 1, 'errors': [{'index': 1, 'reason': 'value: ...'}]}

The body is one reading (a JSON object) or a batch (a JSON array of
objects), decoded by :func:`flows.decode.decode_payload` with
``RawMessage(source="http")``: exactly the rules every other source gets
(fields, timestamps, limits of ``decode`` in the pipeline config).
``tenant`` defaults to the caller's; a reading naming another tenant is
rejected. Accepted readings go to the raw topic (``STREAMFORGE_RAW_TOPIC``,
default ``streamforge.raw``) as :class:`schemas.models.Reading` JSON, one
message per device and request keyed ``tenant/device`` (a JSON object for
one reading, an array for several), which a flow with a Kafka source
reads (its decoder takes both; ``source`` becomes ``kafka``); rejected items
go to the dead-letter topic with their reason as well. The answer comes
once Kafka acknowledged them (``acks=all``): 200 means stored; 503 means
Kafka did not take them and the client should retry.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import app_state, request_caller
from api.kafka import Headers, KafkaUnavailableError, Message3
from api.models import IngestRejected, IngestResult
from flows.decode import decode_payload
from flows.metrics import counter
from schemas.models import SCHEMA_VERSION, DeadLetter, RawMessage, Reading, to_json

router = APIRouter(tags=["ingest"])

ACCEPTED = counter("streamforge_api_ingest_accepted_total", "Readings accepted by POST /ingest")
REJECTED = counter("streamforge_api_ingest_rejected_total", "Items rejected by POST /ingest")

_MAX_DEAD_PAYLOAD = 64 * 1024
_READINGS = TypeAdapter(list[Reading])
_ALL_ACCEPTED = b'{"accepted":%d,"rejected":0,"errors":[]}'
_ITEM = re.compile(r"^item (\d+): (.*)$", re.DOTALL)
_READING_HEADERS: Headers = [("schema-version", str(SCHEMA_VERSION).encode()), ("kind", b"reading")]
_DEAD_HEADERS: Headers = [
    ("schema-version", str(SCHEMA_VERSION).encode()),
    ("kind", b"dead_letter"),
]

_BODY_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"$ref": "#/components/schemas/IngestReading"},
        {"type": "array", "items": {"$ref": "#/components/schemas/IngestReading"}},
    ]
}
_EXAMPLES = {
    "one": {
        "summary": "One reading",
        "value": {"device": "press-1", "metric": "temperature", "value": 71.5,
                  "ts": "2026-01-01T00:00:00Z", "unit": "degC"},
    },
    "batch": {
        "summary": "A batch",
        "value": [
            {"device": "press-1", "metric": "temperature", "value": 71.5},
            {"device": "press-1", "metric": "running", "value": True},
        ],
    },
}  # fmt: skip
READING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["device", "metric", "value"],
    "additionalProperties": False,
    "properties": {
        "device": {"type": "string", "minLength": 1, "maxLength": 200},
        "metric": {"type": "string", "minLength": 1, "maxLength": 200},
        "value": {"type": ["number", "boolean", "string"]},
        "ts": {
            "type": ["string", "number", "null"],
            "description": "ISO 8601 with offset, or Unix epoch (s, ms, µs, ns); default: now.",
        },
        "tenant": {"type": "string", "description": "Default (and only allowed): yours."},
        "quality": {"enum": ["good", "uncertain", "bad"]},
        "unit": {"type": ["string", "null"]},
        "attributes": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
    },
}
"""JSON Schema of one ingested reading (added to the OpenAPI components by ``api/main.py``)."""


def _rejection(dead: DeadLetter) -> IngestRejected:
    match = _ITEM.match(dead.reason)
    if match:
        return IngestRejected(index=int(match.group(1)), reason=match.group(2))
    return IngestRejected(index=None, reason=dead.reason)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {declared} bytes is larger than {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/ingest",
    response_model=IngestResult,
    summary="Ingest one reading or a batch",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BODY_SCHEMA, "examples": _EXAMPLES}},
        },
        "security": [{"APIKeyHeader": []}, {"HTTPBearer": []}],
    },
    responses={
        401: {"description": "No valid API key or bearer token."},
        403: {"description": "The operator role is needed."},
        413: {"description": "Body larger than decode.max_payload_bytes."},
        503: {"description": "Kafka did not acknowledge the readings; retry."},
    },
)
async def ingest(request: Request) -> Response:
    """Validate readings and write the good ones to Kafka; say why each bad one was rejected.

    Needs the operator role.
    """
    # Served by IngestFastPath below; this route documents it in OpenAPI
    # and serves it where the middleware is not installed.
    caller = await request_caller(request, "operator")
    state = app_state(request)
    decode = state.extras["decode_config"]
    body = await _read_body(request, decode.max_payload_bytes)
    raw = RawMessage(
        payload=body,
        source="http",
        received_at=datetime.now(UTC),
        origin="http",
        defaults={"tenant": caller.tenant},
    )
    readings, dead = decode_payload(raw, decode)
    errors = [_rejection(d) for d in dead]
    decoder_bad = sorted(e.index for e in errors if e.index is not None)
    is_array = body.lstrip()[:1] == b"["
    accepted: list[Reading] = []
    for index, reading in enumerate(readings):
        if reading.tenant == caller.tenant:
            accepted.append(reading)
        else:
            # Index among the body's items is only known for arrays; the
            # decoder keeps item order, so count good items back.
            errors.append(
                IngestRejected(
                    index=_item_index(index, decoder_bad) if is_array else None,
                    reason=f"tenant {reading.tenant!r} is not yours ({caller.tenant!r})",
                )
            )
            dead.append(
                DeadLetter(
                    received_at=raw.received_at, source="http", reason=errors[-1].reason,
                    payload=to_json(reading).decode(), origin="http", tenant=caller.tenant,
                )
            )  # fmt: skip
    messages = _reading_messages(accepted)
    dead_messages: list[Message3] = [
        (f"{caller.tenant}/http".encode(), to_json(_bounded(d)), _DEAD_HEADERS) for d in dead
    ]
    if state.producer is None:
        raise HTTPException(503, "Kafka is not configured; ingest needs it")
    try:
        await state.producer.send(state.settings.raw_topic, messages)
        await state.producer.send(state.settings.dead_letters_topic, dead_messages)
    except KafkaUnavailableError as exc:
        raise HTTPException(503, f"Kafka did not take the readings: {exc}") from exc
    ACCEPTED.inc(len(accepted))
    if not errors:
        return Response(_ALL_ACCEPTED % len(accepted), media_type="application/json")
    REJECTED.inc(len(errors))
    errors.sort(key=lambda e: -1 if e.index is None else e.index)
    result = IngestResult(accepted=len(accepted), rejected=len(errors), errors=errors)
    return Response(result.model_dump_json(), media_type="application/json")


def _bounded(dead: DeadLetter) -> DeadLetter:
    """A dead letter whose payload fits a Kafka message (bodies may reach max_payload_bytes)."""
    if len(dead.payload) <= _MAX_DEAD_PAYLOAD:
        return dead
    return dataclasses.replace(
        dead,
        payload=dead.payload[:_MAX_DEAD_PAYLOAD],
        reason=f"{dead.reason} (payload truncated to {_MAX_DEAD_PAYLOAD} characters)",
    )


def _reading_messages(readings: list[Reading]) -> list[Message3]:
    """One message per device: its reading as a JSON object, or its readings as an array.

    Keyed ``tenant/device``, so a device's readings keep their order in one
    partition; an array is what the Kafka source decodes as a batch, and a
    batch of 1,000 readings of 10 devices is 10 messages, not 1,000.
    """
    by_device: dict[str, list[Reading]] = {}
    for r in readings:
        by_device.setdefault(f"{r.tenant}/{r.device}", []).append(r)
    return [
        (
            key.encode(),
            to_json(group[0]) if len(group) == 1 else _READINGS.dump_json(group),
            _READING_HEADERS,
        )
        for key, group in by_device.items()
    ]


def _item_index(good_index: int, bad: list[int]) -> int:
    """The array index of the ``good_index``-th decoded item, given the decoder's rejects."""
    index = good_index
    for b in bad:
        if b <= index:
            index += 1
    return index


class IngestFastPath:
    """ASGI middleware answering ``POST /ingest`` before FastAPI's routing and dependencies.

    On single-reading requests FastAPI's route matching, middleware layers
    and dependency resolution cost more than decoding the reading and
    producing it to Kafka; this serves the same endpoint (same function,
    same authentication) without them, and passes every other request on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``POST /ingest``; hand anything else to the wrapped app."""
        if scope["type"] != "http" or scope["path"] != "/ingest" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await ingest(request)
        except HTTPException as exc:
            response = JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        await response(scope, receive, send)
