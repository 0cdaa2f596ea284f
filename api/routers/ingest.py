"""HTTP ingest: readings in, validated by the pipeline's own decoder, out to the Kafka raw topic.

>>> import httpx
>>> httpx.post("http://127.0.0.1:8000/ingest", headers={"X-API-Key": "sfk_..."},
...            json=[{"device": "press-1", "metric": "temperature", "value": 71.5},
...                  {"device": "press-1", "metric": "pressure", "value": "NaN"}],
...            ).json()  # doctest: +SKIP
{'accepted': 1, 'rejected': 1, 'errors': [{'index': 1, 'reason': 'value: ...'}]}
>>> [(r.path, *r.methods) for r in router.routes]
[('/ingest', 'POST')]

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
Kafka did not take them and the client should retry. A batch of three
readings of two devices is two messages:

>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> batch = [Reading(device=d, metric="temperature", ts=t, value=v)
...          for d, v in [("press-1", 71.5), ("press-2", 64.0), ("press-1", 71.7)]]
>>> [(key, value[:1]) for key, value, _headers in _reading_messages(batch)]
[(b'default/press-1', b'['), (b'default/press-2', b'{')]
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import TypeAdapter
from starlette.types import Receive, Scope, Send

from api.auth import Principal
from api.deps import AppState, app_state, authenticate_headers, request_caller
from api.kafka import Headers, KafkaUnavailableError, Message3
from api.models import IngestRejected, IngestResult
from api.params import read_body
from connectors.runtime.metrics import counter
from flows.decode import decode_payload
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
    # api/main.py serves POST /ingest with serve_ingest() below; this route
    # documents it in OpenAPI and serves it where that is not installed.
    caller = await request_caller(request, "operator")
    state = app_state(request)
    body = await read_body(request, state.extras["decode_config"].max_payload_bytes)
    return Response(await ingest_body(state, caller, body), media_type="application/json")


async def ingest_body(state: AppState, caller: Principal, body: bytes) -> bytes:
    """Decode ``body``, produce what is good to Kafka, answer the JSON of :class:`IngestResult`.

    Returns once Kafka acknowledged every message; HTTPException 503 if it
    did not (or is not configured).
    """
    decode = state.extras["decode_config"]
    raw = RawMessage(
        payload=body,
        source="http",
        received_at=datetime.now(UTC),
        origin="http",
        defaults={"tenant": caller.tenant},
    )
    readings, dead = decode_payload(raw, decode)
    errors = [_rejection(d) for d in dead] if dead else []
    accepted = readings
    if any(r.tenant != caller.tenant for r in readings):
        accepted = _own_tenant(readings, caller.tenant, body, raw.received_at, errors, dead)
    if state.producer is None:
        raise HTTPException(503, "Kafka is not configured; ingest needs it")
    try:
        await state.producer.send(state.settings.raw_topic, _reading_messages(accepted))
        if dead:
            dead_messages: list[Message3] = [
                (f"{caller.tenant}/http".encode(), to_json(_bounded(d)), _DEAD_HEADERS)
                for d in dead
            ]
            await state.producer.send(state.settings.dead_letters_topic, dead_messages)
    except KafkaUnavailableError as exc:
        raise HTTPException(503, f"Kafka did not take the readings: {exc}") from exc
    ACCEPTED.inc(len(accepted))
    if not errors:
        return _ALL_ACCEPTED % len(accepted)
    REJECTED.inc(len(errors))
    errors.sort(key=lambda e: -1 if e.index is None else e.index)
    result = IngestResult(accepted=len(accepted), rejected=len(errors), errors=errors)
    return result.model_dump_json().encode()


def _own_tenant(
    readings: list[Reading],
    tenant: str,
    body: bytes,
    received_at: datetime,
    errors: list[IngestRejected],
    dead: list[DeadLetter],
) -> list[Reading]:
    """The readings of ``tenant``; the others become rejections and dead letters."""
    decoder_bad = sorted(e.index for e in errors if e.index is not None)
    is_array = body.lstrip()[:1] == b"["
    accepted: list[Reading] = []
    for index, reading in enumerate(readings):
        if reading.tenant == tenant:
            accepted.append(reading)
            continue
        # Index among the body's items is only known for arrays; the
        # decoder keeps item order, so count good items back.
        errors.append(
            IngestRejected(
                index=_item_index(index, decoder_bad) if is_array else None,
                reason=f"tenant {reading.tenant!r} is not yours ({tenant!r})",
            )
        )
        dead.append(
            DeadLetter(
                received_at=received_at, source="http", reason=errors[-1].reason,
                payload=to_json(reading).decode(), origin="http", tenant=tenant,
            )
        )  # fmt: skip
    return accepted


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
    if len(readings) == 1:  # the usual HTTP request, without the grouping
        r = readings[0]
        return [(f"{r.tenant}/{r.device}".encode(), to_json(r), _READING_HEADERS)]
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


_JSON_HEADERS = [(b"content-type", b"application/json")]


async def serve_ingest(state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /ingest`` as a bare ASGI handler: the route's rules without Starlette's objects.

    Reads the credential and ``content-length`` in one pass over the raw
    headers, the body straight from ``receive`` (bounded by
    ``decode.max_payload_bytes``), and answers with two ASGI messages; the
    work in between is :func:`ingest_body`, as in the route.
    """
    api_key = authorization = declared = None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            api_key = value.decode("latin-1")
        elif name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-length":
            declared = value
    try:
        caller = await authenticate_headers(state, api_key, authorization, "operator")
        limit = state.extras["decode_config"].max_payload_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"body of {int(declared)} bytes is larger than {limit}")
        body = await _receive_body(receive, limit)
        status, payload = 200, await ingest_body(state, caller, body)
        headers = _JSON_HEADERS
    except HTTPException as exc:
        status = exc.status_code
        # As Starlette's JSONResponse writes it.
        payload = json.dumps(
            {"detail": exc.detail}, ensure_ascii=False, separators=(",", ":")
        ).encode()
        extra = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
        headers = [*_JSON_HEADERS, *extra]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _receive_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise HTTPException(400, "the client went away before the body was complete")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is larger than {limit} bytes")
        if not message.get("more_body", False):
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)
