"""Shared fixtures: where the real services started by ``make up`` listen.

Integration tests ask for these fixtures; when a service does not answer,
the test fails with a message saying how to start it (never a silent skip:
``make test`` starts every service before running the suite).
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import pytest

from schemas.settings import Settings


def _require_port(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        pytest.fail(
            f"{what} is not reachable on {host}:{port} ({exc}); start it with `make up`",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Connection settings (environment, else the defaults of ``make up``)."""
    return Settings()


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    """Bootstrap servers of the local Kafka broker."""
    host, _, port = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
    _require_port(host, int(port), "Kafka")
    return settings.kafka_bootstrap_servers


@pytest.fixture(scope="session")
def database_url(settings: Settings) -> str:
    """URL of the local TimescaleDB."""
    url = urlparse(settings.database_url)
    _require_port(url.hostname or "127.0.0.1", url.port or 5432, "TimescaleDB")
    return settings.database_url


@pytest.fixture(scope="session")
def mqtt_address(settings: Settings) -> tuple[str, int]:
    """(host, port) of the local Mosquitto broker."""
    url = urlparse(settings.mqtt_url)
    host, port = url.hostname or "127.0.0.1", url.port or 1883
    _require_port(host, port, "Mosquitto")
    return host, port
