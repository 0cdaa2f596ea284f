"""OPC UA security: Basic256Sha256 SignAndEncrypt with generated certificates, and clear errors.

The server only offers Basic256Sha256/SignAndEncrypt, only accepts user
``op``/``secret`` and only trusts the client certificate made by
``python -m connectors.opcua gen-cert``. Every wrong setting must end in one
OpcuaOpenError with a message that says what is wrong, raised when the
partition is built: no hang, no retry loop, no log flood.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.testing import TestingSink, run_main

from connectors.opcua.session import CONNECT_FAILURES
from connectors.opcua.source import OpcuaOpenError, OpcuaSource, main
from tests.integration.opcua_harness import (
    OpcuaTestServer,
    collect,
    of_metric,
    open_partition,
    source_config,
)

NODES = [{"node_id": "ns=2;s=Line1.Counter", "device": "line1", "metric": "counter"}]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("opcua-certs")
    # The documented commands, run as a user would.
    assert main(["gen-cert", "--out", str(out)]) == 0
    assert main(["gen-cert", "--out", str(out), "--name", "other"]) == 0
    assert (
        main(
            [
                "gen-cert",
                "--out",
                str(out),
                "--name",
                "server",
                "--server",
                "--app-uri",
                "urn:freeopcua:python:server",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def server(certs: Path) -> Iterator[OpcuaTestServer]:
    srv = OpcuaTestServer(
        "--period-ms",
        "50",
        "--policies",
        "encrypt",
        "--cert",
        str(certs / "server-cert.der"),
        "--key",
        str(certs / "server-key.pem"),
        "--user",
        "op",
        "--password",
        "secret",
        "--trusted-cert",
        str(certs / "client-cert.der"),
    ).start()
    yield srv
    srv.kill()


def secure(certs: Path, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "certificate": str(certs / "client-cert.der"),
        "private_key": str(certs / "client-key.pem"),
        "username": "op",
        "password": "secret",
    }
    options.update(overrides)
    return {k: v for k, v in options.items() if v is not None}


def test_sign_and_encrypt_with_generated_certificates(server: OpcuaTestServer, certs: Path) -> None:
    # Pinning the server certificate too: the strictest configuration.
    options = secure(certs, server_certificate=str(certs / "server-cert.der"))
    part = open_partition(source_config(server.url, NODES, name="secure", **options))
    try:
        readings = collect(part, lambda rs: len(rs) >= 10)
    finally:
        part.close()
    values = [int(r.value) for r in of_metric(readings, "counter")]
    assert values == sorted(values) and len(set(values)) == len(values)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


WRONG: dict[str, tuple[dict[str, str | None], str]] = {
    "no security": (
        {"security_policy": None, "security_mode": None, "certificate": None, "private_key": None},
        "offers: Basic256Sha256/SignAndEncrypt",
    ),
    "sign only": ({"security_mode": "Sign"}, "no endpoint with security Basic256Sha256/Sign"),
    "wrong password": (
        {"password": "guess"},
        "rejected the username/password (BadUserAccessDenied)",
    ),
    "no user": ({"username": None, "password": None}, "BadIdentityTokenRejected"),
    "untrusted certificate": (
        {"certificate": "other-cert.der", "private_key": "other-key.pem"},
        "does not trust our certificate",
    ),
    "key of another certificate": ({"private_key": "other-key.pem"}, "does not match certificate"),
    "wrong pinned server certificate": (
        {"server_certificate": "other-cert.der"},
        "is not the certificate the server announces",
    ),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_wrong_settings_give_one_clear_error(
    server: OpcuaTestServer, certs: Path, case: str
) -> None:
    changes, expected = WRONG[case]
    overrides = {
        k: str(certs / v) if isinstance(v, str) and v.endswith((".der", ".pem")) else v
        for k, v in changes.items()
    }
    name = f"wrong-{case.replace(' ', '-')}"
    logger = logging.getLogger("streamforge.connectors.opcua")
    records = _Records()
    logger.addHandler(records)
    try:
        with pytest.raises(OpcuaOpenError) as raised:
            open_partition(
                source_config(server.url, NODES, name=name, **secure(certs, **overrides))
            )
        failures = CONNECT_FAILURES.value(endpoint=name)
        time.sleep(1.0)  # longer than reconnect_initial_s: a retry loop left behind would show
    finally:
        logger.removeHandler(records)
    assert expected in str(raised.value)
    assert repr(name) in str(raised.value)  # says which endpoint
    assert CONNECT_FAILURES.value(endpoint=name) == failures
    assert len(records.records) <= 1


def test_open_error_surfaces_through_bytewax(server: OpcuaTestServer) -> None:
    config = source_config(server.url, NODES, name="bytewax-open")  # no security at all
    flow = Dataflow("opcua_open_error")
    op.output("out", op.input("in", flow, OpcuaSource(config)), TestingSink([]))
    with pytest.raises(BytewaxRuntimeError) as raised:
        run_main(flow)
    assert isinstance(raised.value.__cause__, OpcuaOpenError)
    assert "offers: Basic256Sha256/SignAndEncrypt" in str(raised.value.__cause__)
