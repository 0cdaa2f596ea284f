"""API keys of the caller's tenant (admin role): create, list, revoke.

>>> import httpx
>>> httpx.post("http://127.0.0.1:8000/keys", json={"role": "viewer", "name": "grafana"},
...            headers={"X-API-Key": "sfk_...admin..."}).json()["key"]  # doctest: +SKIP
'sfk_1a2b3c4d_...'
>>> [(r.path, *r.methods) for r in router.routes]
[('/keys', 'GET'), ('/keys', 'POST'), ('/keys/{key_id}', 'DELETE')]

The first admin key of a tenant comes from the command line
(``python -m api.keys create --tenant default --role admin``).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path

from api.auth import hash_api_key, key_id, new_api_key
from api.deps import Admin, State, TenantDB
from api.models import ApiKeyCreated, ApiKeyIn, ApiKeyOut
from api.params import TEXT_PATTERN

router = APIRouter(tags=["keys"])

_COLUMNS = "id, tenant, role, name, created_at, revoked_at"


@router.get("/keys", response_model=list[ApiKeyOut], summary="List API keys")
async def list_keys(conn: TenantDB, caller: Admin) -> list[ApiKeyOut]:
    """Every key of the caller's tenant, revoked ones too (never the keys themselves)."""
    cur = await conn.execute("SELECT " + _COLUMNS + " FROM api_keys ORDER BY created_at, id")
    return [ApiKeyOut(**row) for row in await cur.fetchall()]


@router.post("/keys", response_model=ApiKeyCreated, status_code=201, summary="Create an API key")
async def create_key(conn: TenantDB, caller: Admin, body: ApiKeyIn) -> ApiKeyCreated:
    """A new key in the caller's tenant; ``key`` is in this answer only."""
    key = new_api_key()
    cur = await conn.execute(
        "INSERT INTO api_keys (id, tenant, role, name, key_hash) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING " + _COLUMNS,
        (key_id(key), caller.tenant, body.role, body.name, hash_api_key(key)),
    )
    row = await cur.fetchone()
    assert row is not None
    return ApiKeyCreated(**row, key=key)


@router.delete("/keys/{key_id}", response_model=ApiKeyOut, summary="Revoke an API key")
async def revoke_key(
    state: State,
    conn: TenantDB,
    caller: Admin,
    key_id: str = Path(min_length=1, max_length=40, pattern=TEXT_PATTERN),
) -> ApiKeyOut:
    """Revoke a key of the caller's tenant (it stops working within ``api_key_cache_s``)."""
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s"
        " RETURNING " + _COLUMNS,
        (key_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"no API key {key_id!r}")
    state.key_cache.clear()  # this process forgets it at once
    return ApiKeyOut(**row)
