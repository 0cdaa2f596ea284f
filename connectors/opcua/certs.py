"""Self-signed OPC UA application certificates for the Basic256Sha256 policy.

    python -m connectors.opcua gen-cert --out deploy/opcua-certs
    # -> deploy/opcua-certs/client-cert.der, client-key.pem
    python -m connectors.opcua gen-cert --out certs --name server --server \\
        --app-uri urn:example:plc --hostname plc.local

>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> paths = generate_certificate(out)
>>> sorted(p.name for p in paths)
['client-cert.der', 'client-key.pem']
>>> application_uri_of(paths[0])
'urn:streamforge:opcua-client'

OPC UA (Part 6, 6.2.2) wants the application URI in the certificate's
SubjectAlternativeName and the same URI in the session's client
description; :func:`application_uri_of` reads it back so the client always
announces the URI its certificate carries. The key is RSA 2048 with SHA-256
signatures, what Basic256Sha256 requires. The server must trust the client
certificate (copy ``client-cert.der`` into its trusted store); the client
pins the server certificate when ``server_certificate`` is configured.
"""

from __future__ import annotations

import socket
from pathlib import Path

from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

DEFAULT_APPLICATION_URI = "urn:streamforge:opcua-client"
"""The application URI of StreamForge's client certificate unless told otherwise."""


def generate_certificate(
    out_dir: str | Path,
    name: str = "client",
    application_uri: str = DEFAULT_APPLICATION_URI,
    hostname: str | None = None,
    days: int = 3650,
    server: bool = False,
) -> tuple[Path, Path]:
    """Write ``<name>-cert.der`` and ``<name>-key.pem`` (unencrypted PKCS#8) into ``out_dir``.

    ``server=True`` marks the certificate for server authentication (for a
    test or simulation server); otherwise it is a client certificate.
    Returns ``(certificate_path, key_path)``. Existing files are overwritten.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    host = hostname or socket.gethostname()
    key = generate_private_key()
    usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = generate_self_signed_app_certificate(
        key,
        common_name=f"StreamForge {name}",
        names={"organizationName": "StreamForge"},
        subject_alt_names=[
            x509.UniformResourceIdentifier(application_uri),
            x509.DNSName(host),
            x509.DNSName("localhost"),
        ],
        extended=usage,
        days=days,
    )
    cert_path = out / f"{name}-cert.der"
    key_path = out / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(dump_private_key_as_pem(key))
    key_path.chmod(0o600)
    return cert_path, key_path


def load_certificate_file(path: str | Path) -> x509.Certificate:
    """A certificate from a DER or PEM file (PEM recognised by its header)."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def application_uri_of(path: str | Path) -> str | None:
    """The first URI in a certificate's SubjectAlternativeName, or None."""
    cert = load_certificate_file(path)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
