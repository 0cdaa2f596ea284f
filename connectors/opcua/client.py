"""Build and connect an asyncua Client from an endpoint config, and say clearly why it failed.

>>> import asyncio
>>> endpoint = {"name": "line1", "url": "opc.tcp://127.0.0.1:4840",
...             "nodes": [{"node_id": "ns=2;i=1", "device": "press-1", "metric": "temperature"}]}
>>> endpoint_cfg = OpcuaEndpointConfig.model_validate(endpoint)
>>> client = asyncio.run(make_client(endpoint_cfg))   # security, certificates, credentials
>>> client.server_url.geturl()
'opc.tcp://127.0.0.1:4840'
>>> asyncio.run(connect(client, endpoint_cfg))  # OpcuaOpenError: no use retrying  # doctest: +SKIP

Errors come in two kinds. *Transient* ones (refused, timed out, reset) are
retried with backoff by the session. *Configuration* ones are raised as
:class:`OpcuaOpenError` with a message that says what to fix: wrong
credentials (BadUserAccessDenied), no endpoint with the requested
policy/mode (the message lists what the server offers), certificate
rejected, a private key that does not match its certificate, a missing
file. The connect is staged (socket, hello, secure channel, session) so a
server that accepts TCP but drops a Basic256Sha256 secure channel is
reported as a security problem instead of an endless "connection closed".
Certificate and key files are checked before anything connects:

>>> secure = OpcuaEndpointConfig.model_validate({**endpoint,
...     "security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt",
...     "certificate": "/nonexistent/client-cert.der",
...     "private_key": "/nonexistent/client-key.pem"})
>>> check_key_pair(secure)
Traceback (most recent call last):
    ...
connectors.opcua.client.OpcuaOpenError: OPC UA endpoint 'line1' (opc.tcp://127.0.0.1:4840):
cannot read certificate /nonexistent/client-cert.der: No such file or directory
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from connectors.opcua.certs import (
    DEFAULT_APPLICATION_URI,
    application_uri_of,
    load_certificate_file,
)
from connectors.opcua.config import OpcuaEndpointConfig


class OpcuaOpenError(RuntimeError):
    """An endpoint cannot be opened with its configuration; retrying will not help."""


# Status codes that mean "your configuration is wrong", not "try again later".
_CONFIG_STATUS = {
    ua.StatusCodes.BadUserAccessDenied: "the server rejected the username/password",
    ua.StatusCodes.BadIdentityTokenInvalid: "the server rejected the user identity token",
    ua.StatusCodes.BadIdentityTokenRejected: (
        "the server does not accept this kind of login (anonymous or username); "
        "set username/password or check the server's user token policies"
    ),
    ua.StatusCodes.BadSecurityPolicyRejected: "the server rejected the security policy",
    ua.StatusCodes.BadSecurityModeRejected: "the server rejected the security mode",
    ua.StatusCodes.BadSecurityChecksFailed: "the server's security checks failed",
    ua.StatusCodes.BadCertificateInvalid: "the certificate is invalid",
    ua.StatusCodes.BadCertificateUntrusted: (
        "the server does not trust our certificate; add it to the server's trusted certificates"
    ),
    ua.StatusCodes.BadCertificateUriInvalid: "the certificate's application URI is not accepted",
    ua.StatusCodes.BadCertificateHostNameInvalid: "the certificate's host name is not accepted",
    ua.StatusCodes.BadCertificateTimeInvalid: "the certificate has expired or is not yet valid",
    ua.StatusCodes.BadCertificateRevoked: "the certificate has been revoked",
    ua.StatusCodes.BadCertificateUseNotAllowed: "the certificate may not be used for this",
    ua.StatusCodes.BadApplicationSignatureInvalid: "the server could not verify our signature",
    ua.StatusCodes.BadNoValidCertificates: "no valid certificate",
}


def _security_mode(cfg: OpcuaEndpointConfig) -> ua.MessageSecurityMode:
    return {
        "None": ua.MessageSecurityMode.None_,
        "Sign": ua.MessageSecurityMode.Sign,
        "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
    }[cfg.security_mode]


def _where(cfg: OpcuaEndpointConfig) -> str:
    return f"OPC UA endpoint {cfg.name!r} ({cfg.url})"


def _read(cfg: OpcuaEndpointConfig, path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OpcuaOpenError(
            f"{_where(cfg)}: cannot read {what} {path}: {exc.strerror or exc}"
        ) from exc


def check_key_pair(cfg: OpcuaEndpointConfig) -> None:
    """Raise OpcuaOpenError unless the certificate and private key files exist and belong together.

    A mismatched pair otherwise shows up as the server silently dropping the
    secure channel, which looks exactly like a network timeout.
    """
    assert cfg.certificate is not None and cfg.private_key is not None
    _read(cfg, cfg.certificate, "certificate")
    try:
        cert = load_certificate_file(cfg.certificate)
    except ValueError as exc:
        raise OpcuaOpenError(
            f"{_where(cfg)}: {cfg.certificate} is not a DER or PEM certificate: {exc}"
        ) from exc
    key_bytes = _read(cfg, cfg.private_key, "private key")
    password = (
        cfg.private_key_password.get_secret_value().encode() if cfg.private_key_password else None
    )
    try:
        key = load_pem_private_key(key_bytes, password=password)
    except (ValueError, TypeError) as exc:
        raise OpcuaOpenError(
            f"{_where(cfg)}: cannot load private key {cfg.private_key} "
            "(PEM expected; wrong or missing "
            f"private_key_password?): {exc}"
        ) from exc
    fmt = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
        raise OpcuaOpenError(
            f"{_where(cfg)}: private key {cfg.private_key} "
            f"does not match certificate {cfg.certificate}"
        )


async def make_client(cfg: OpcuaEndpointConfig) -> Client:
    """A configured, not yet connected Client (a new one for every connection attempt)."""
    if cfg.security_policy != "None":
        check_key_pair(cfg)
        if cfg.server_certificate is not None:
            _read(cfg, cfg.server_certificate, "server certificate")
    client = Client(
        cfg.url, timeout=cfg.request_timeout_s, watchdog_intervall=cfg.watchdog_interval_s
    )
    client.name = client.description = "StreamForge"
    client.product_uri = "urn:streamforge"
    uri = cfg.application_uri
    if uri is None and cfg.certificate is not None:
        uri = application_uri_of(cfg.certificate)
    client.application_uri = uri or DEFAULT_APPLICATION_URI
    # A dead client's session lingers on the server this long; short keeps servers tidy.
    client.session_timeout = max(60_000, int(cfg.keepalive_s * 4_000))
    try:
        cfg.resolved_password()  # fail now, not at activation, when password_env is unset
    except ValueError as exc:
        raise OpcuaOpenError(f"{_where(cfg)}: {exc}") from exc
    if cfg.security_policy != "None":
        assert cfg.certificate is not None and cfg.private_key is not None
        try:
            await client.set_security(
                security_policies.SecurityPolicyBasic256Sha256,
                certificate=str(cfg.certificate),
                private_key=str(cfg.private_key),
                private_key_password=(
                    cfg.private_key_password.get_secret_value()
                    if cfg.private_key_password
                    else None
                ),
                server_certificate=str(cfg.server_certificate) if cfg.server_certificate else None,
                mode=_security_mode(cfg),
            )
        except Exception as exc:
            # Without a pinned server certificate this fetched the endpoints from the server.
            raise await _explain(client, cfg, "security setup", exc) from exc
    return client


async def connect(client: Client, cfg: OpcuaEndpointConfig) -> None:
    """Connect socket, secure channel and session; OpcuaOpenError for configuration problems."""
    stage = "connect"
    try:
        await client.connect_socket()
        try:
            stage = "hello"
            await client.send_hello()
            stage = "secure channel"
            await client.open_secure_channel()
            stage = "session"
            await client.create_session()
            try:
                await client.activate_session(
                    username=cfg.username,
                    password=cfg.resolved_password(),
                    certificate=client.user_certificate,
                )
            except Exception:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close_session(), cfg.request_timeout_s)
                raise
        except Exception:
            client.disconnect_socket()
            raise
    except (asyncio.CancelledError, OpcuaOpenError):
        raise
    except Exception as exc:
        raise await _explain(client, cfg, stage, exc) from exc


async def _endpoints(cfg: OpcuaEndpointConfig) -> list[ua.EndpointDescription]:
    """The server's endpoints over an unsecured channel (always allowed), [] if that fails."""
    probe = Client(cfg.url, timeout=cfg.request_timeout_s)
    try:
        endpoints: list[ua.EndpointDescription] = await asyncio.wait_for(
            probe.connect_and_get_server_endpoints(), cfg.request_timeout_s
        )
    except Exception:
        return []
    return endpoints


async def _offered_endpoints(cfg: OpcuaEndpointConfig) -> str:
    """What the server offers, as ``Policy/Mode`` pairs (best effort, for error messages)."""
    pairs = sorted(
        {
            f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name.rstrip('_')}"
            for ep in await _endpoints(cfg)
        }
    )
    return ", ".join(pairs) or "unknown"


async def _pinned_certificate_differs(cfg: OpcuaEndpointConfig) -> bool:
    """True when ``server_certificate`` is set and is not the certificate the server announces."""
    if cfg.server_certificate is None:
        return False
    pinned = load_certificate_file(cfg.server_certificate).public_bytes(Encoding.DER)
    announced = {ep.ServerCertificate for ep in await _endpoints(cfg) if ep.ServerCertificate}
    # A server may append its chain after its own certificate; compare the leading one.
    return bool(announced) and not any(cert.startswith(pinned) for cert in announced)


async def _explain(
    client: Client, cfg: OpcuaEndpointConfig, stage: str, exc: Exception
) -> Exception:
    """OpcuaOpenError when ``exc`` is a configuration problem, else ``exc`` itself (transient)."""
    where = _where(cfg)
    if isinstance(exc, OpcuaOpenError):
        return exc
    if isinstance(exc, ua.UaStatusCodeError) and exc.code in _CONFIG_STATUS:
        name = ua.StatusCode(exc.code).name
        return OpcuaOpenError(f"{where}: {_CONFIG_STATUS[exc.code]} ({name}) during {stage}")
    text = str(exc)
    if isinstance(exc, ua.UaError) and "No matching endpoints" in text:
        offered = await _offered_endpoints(cfg)
        return OpcuaOpenError(
            f"{where}: the server offers no endpoint with security {cfg.security_policy}/"
            f"{cfg.security_mode}; it offers: {offered}"
        )
    if isinstance(exc, ua.UaError) and "certificate mismatch" in text:
        return OpcuaOpenError(
            f"{where}: the server's certificate differs from server_certificate "
            f"{cfg.server_certificate}"
        )
    if stage == "secure channel" and cfg.security_policy != "None":
        if await _pinned_certificate_differs(cfg):
            return OpcuaOpenError(
                f"{where}: server_certificate {cfg.server_certificate} is not the certificate the "
                "server announces; update or remove server_certificate"
            )
        # asyncua only logs the server's ERR message and closes the socket; the request
        # then fails as "connection closed". With the socket and Hello fine, it is security.
        return OpcuaOpenError(
            f"{where}: the server closed the "
            f"{cfg.security_policy}/{cfg.security_mode} secure channel "
            f"({type(exc).__name__}: {text or 'no detail'}); it probably does not trust our "
            f"certificate {cfg.certificate} or cannot verify it"
        )
    return exc
