"""FastAPI dependencies: the app's shared state, the caller, role checks, tenant transactions.

>>> from fastapi import APIRouter, Depends
>>> router = APIRouter()
>>> @router.get("/whoami")
... async def whoami(caller: Principal = Depends(require("viewer"))) -> dict[str, str]:
...     return {"tenant": caller.tenant, "role": caller.role}
>>> [r.path for r in router.routes]
['/whoami']

A role check admits a caller whose role is at least the one asked for,
and answers 403 otherwise:

>>> import asyncio
>>> asyncio.run(require("operator")(Principal("plant-a", "viewer", "alice")))
Traceback (most recent call last):
    ...
fastapi.exceptions.HTTPException: 403: this needs the operator role; you are viewer

A route that queries asks for :func:`tenant_db`: a connection inside a
transaction that runs as the API role with ``streamforge.tenant`` set to
the caller's tenant, so row-level security confines it (``api/db.py``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.auth import AuthError, Principal, hash_api_key, key_id, principal_from_jwt
from api.db import Database
from api.kafka import AsyncProducer
from api.settings import ApiSettings

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_bearer = HTTPBearer(auto_error=False, description="An HS256 JWT with tenant and role claims.")


@dataclass
class AppState:
    """What every request shares: settings, the database, Kafka and caches."""

    settings: ApiSettings
    db: Database
    producer: AsyncProducer | None = None
    manual_clear_rules: frozenset[str] = frozenset()
    key_cache: dict[bytes, tuple[float, Principal | None]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def app_state(request: Request) -> AppState:
    """The :class:`AppState` the app was built with."""
    state: AppState = request.app.state.streamforge
    return state


State = Annotated[AppState, Depends(app_state)]


async def _principal_from_key(state: AppState, key: str) -> Principal | None:
    digest = hash_api_key(key)
    now = time.monotonic()
    cached = state.key_cache.get(digest)
    if cached is not None and cached[0] > now:
        return cached[1]
    async with state.db.anonymous() as conn:
        cur = await conn.execute(
            "SELECT id, tenant, role FROM streamforge_api_key_lookup(%s)", (digest,)
        )
        row = await cur.fetchone()
    principal = Principal(row["tenant"], row["role"], row["id"]) if row else None
    if len(state.key_cache) > 10_000:  # bounded: forget everything rather than grow
        state.key_cache.clear()
    state.key_cache[digest] = (now + state.settings.api_key_cache_s, principal)
    return principal


async def authenticate(state: AppState, api_key: str | None, bearer: str | None) -> Principal:
    """The caller an API key or a bearer token names; HTTPException 401 (or 503) otherwise."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if api_key:
        try:
            principal = await _principal_from_key(state, api_key)
        except psycopg.OperationalError as exc:
            raise HTTPException(503, "database unavailable to check the API key") from exc
        if principal is None:
            raise HTTPException(401, f"unknown or revoked API key {key_id(api_key)!r}", challenge)
        return principal
    if bearer is not None:
        secret = state.settings.api_jwt_secret
        if not secret:
            raise HTTPException(401, "bearer tokens are not enabled on this server", challenge)
        try:
            return principal_from_jwt(bearer, secret)
        except AuthError as exc:
            raise HTTPException(401, str(exc), challenge) from exc
    raise HTTPException(
        401, "send an X-API-Key header or an Authorization: Bearer token", challenge
    )


async def caller(
    state: State,
    api_key: Annotated[str | None, Security(_api_key)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Principal:
    """The authenticated caller; 401 without a valid API key or bearer token."""
    return await authenticate(state, api_key, bearer.credentials if bearer else None)


async def request_caller(request: Request, role: str) -> Principal:
    """:func:`caller` and :func:`require` for a route without dependencies (the ingest hot path).

    FastAPI's dependency resolution costs more than the rest of a
    single-reading ingest request together, so that route reads the headers
    itself; the rules are the same.
    """
    headers = request.headers
    return await authenticate_headers(
        app_state(request), headers.get("x-api-key"), headers.get("authorization"), role
    )


async def authenticate_headers(
    state: AppState, api_key: str | None, authorization: str | None, role: str
) -> Principal:
    """The caller of an ``X-API-Key`` / ``Authorization`` header pair, with at least ``role``.

    401 without a valid credential, 403 with too low a role.
    """
    bearer = None
    if authorization and authorization[:7].lower() == "bearer ":
        bearer = authorization[7:].strip()
    principal = await authenticate(state, api_key, bearer)
    if not principal.can(role):
        raise HTTPException(403, f"this needs the {role} role; you are {principal.role}")
    return principal


Caller = Annotated[Principal, Depends(caller)]


def require(role: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that admits callers whose role is at least ``role`` (else 403)."""

    async def check(principal: Caller) -> Principal:
        if not principal.can(role):
            raise HTTPException(403, f"this needs the {role} role; you are {principal.role}")
        return principal

    return check


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]


async def tenant_db(
    state: State, principal: Viewer
) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
    """A connection in a transaction confined to the caller's tenant (RLS)."""
    try:
        async with state.db.tenant(principal.tenant) as conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise HTTPException(503, f"database unavailable: {exc}") from exc


TenantDB = Annotated[psycopg.AsyncConnection[dict[str, Any]], Depends(tenant_db)]
