"""Credentials: API keys (``X-API-Key``) and HS256 JWT bearer tokens, each naming a tenant and role.

>>> token = encode_jwt({"tenant": "plant-a", "role": "viewer", "sub": "alice"}, "s3cret")
>>> principal_from_jwt(token, "s3cret")
Principal(tenant='plant-a', role='viewer', subject='alice')
>>> key = new_api_key()
>>> key.startswith("sfk_") and len(hash_api_key(key)) == 32
True

Roles are ordered: ``viewer`` reads; ``operator`` also acknowledges and
clears alarms and ingests readings; ``admin`` also manages flows and keys.

API keys are ``sfk_<id>_<secret>`` with a 256-bit secret; the database
keeps only the SHA-256 of the whole key (``api_keys.key_hash``). A fast
hash is right here: the key is random, there is no dictionary to try.

Tokens are compact JWS with ``alg: HS256`` (RFC 7519); claims ``tenant``
and ``role`` are required, ``sub`` names the caller, ``exp`` and ``nbf``
are checked when present. Any other ``alg`` (notably ``none``) is refused.
Stdlib only (hmac, hashlib, base64): no extra dependency for ~40 lines.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal, get_args

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
_RANK = {role: rank for rank, role in enumerate(ROLES)}


class AuthError(Exception):
    """A credential that is missing, malformed, expired or unknown (answered 401)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: their tenant, role and a name for audit (key id or token subject)."""

    tenant: str
    role: str
    subject: str

    def can(self, role: str) -> bool:
        """Whether this caller's role is at least ``role``."""
        return _RANK.get(self.role, -1) >= _RANK[role]


def new_api_key() -> str:
    """A fresh random API key, ``sfk_<8 hex id>_<43 chars secret>``."""
    return f"sfk_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def key_id(key: str) -> str:
    """The public id part of a key (``sfk_<id>``), safe to log and show."""
    return "_".join(key.split("_", 2)[:2])


def hash_api_key(key: str) -> bytes:
    """SHA-256 of a key: what the database stores and looks up."""
    return hashlib.sha256(key.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: dict[str, Any], secret: str) -> str:
    """Sign ``claims`` as an HS256 JWT."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def decode_jwt(token: str, secret: str, now: float | None = None) -> dict[str, Any]:
    """The claims of a valid HS256 token; raises :class:`AuthError` otherwise."""
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = json.loads(_unb64(header_b64))
        signature = _unb64(signature_b64)
    except (ValueError, TypeError) as exc:
        raise AuthError("malformed bearer token") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise AuthError("bearer token must be signed with HS256")
    expected = hmac.new(
        secret.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(signature, expected):
        raise AuthError("bad bearer token signature")
    try:
        claims = json.loads(_unb64(payload_b64))
    except ValueError as exc:
        raise AuthError("malformed bearer token claims") from exc
    if not isinstance(claims, dict):
        raise AuthError("bearer token claims must be a JSON object")
    now = time.time() if now is None else now
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is not None and (not isinstance(exp, int | float) or now >= exp):
        raise AuthError("bearer token expired")
    if nbf is not None and (not isinstance(nbf, int | float) or now < nbf):
        raise AuthError("bearer token not yet valid")
    return claims


def _storable(text: str) -> bool:
    # The tenant becomes a database setting: PostgreSQL text holds no NUL
    # and no lone surrogate (JSON "\\ud800" decodes to one).
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def principal_from_jwt(token: str, secret: str) -> Principal:
    """The caller a valid token names; raises :class:`AuthError`."""
    claims = decode_jwt(token, secret)
    tenant, role = claims.get("tenant"), claims.get("role")
    if not isinstance(tenant, str) or not 1 <= len(tenant) <= 200 or not _storable(tenant):
        raise AuthError("bearer token has no valid 'tenant' claim")
    if role not in ROLES:
        raise AuthError(f"bearer token 'role' must be one of {', '.join(ROLES)}")
    subject = claims.get("sub")
    if isinstance(subject, str) and not _storable(subject):
        # It is stored as who acted (alarm actions): refuse rather than rename.
        raise AuthError("bearer token 'sub' claim has a NUL or lone surrogate character")
    return Principal(tenant, role, subject if isinstance(subject, str) else "jwt")
