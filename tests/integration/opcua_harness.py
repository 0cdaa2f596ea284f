"""OPC UA test helpers: a real asyncua server in a subprocess, and a partition driver.

>>> server = OpcuaTestServer("--period-ms", "50")   # doctest: +SKIP
>>> server.start(); server.url                       # doctest: +SKIP
'opc.tcp://127.0.0.1:40123/streamforge/test'

The server runs ``tests/support/opcua_server.py`` so it can be killed
(SIGKILL), frozen (SIGSTOP) and started again on the same port.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.opcua.config import OpcuaSourceConfig
from connectors.opcua.source import OpcuaPartition, OpcuaSource
from schemas.models import Reading
from tests.ports import free_port

SERVER_SCRIPT = Path(__file__).parents[1] / "support" / "opcua_server.py"
START_TIMEOUT_S = 90.0  # asyncua loads its address space in 1-3 s; far more on a busy machine


class OpcuaTestServer:
    """``opcua_server.py`` with the given arguments, on a fixed port across restarts."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.args = list(args)
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None
        # Kept open across restarts, read when a start fails.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/streamforge/test"

    def start(self, *more_args: str) -> OpcuaTestServer:
        """Start (with ``more_args`` this time) and wait for ``READY``; else fail the test."""
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), "--port", str(self.port), *self.args, *more_args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            self.kill()
            self._stderr.seek(0)
            pytest.fail(
                f"OPC UA test server did not start: {self._stderr.read()[-2000:]}", pytrace=False
            )
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing sessions, like a crash or power loss."""
        if self.proc is not None and self.proc.poll() is None:
            if os.name == "posix":
                self.proc.send_signal(signal.SIGCONT)  # in case it is frozen
            self.proc.kill()
            self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: the TCP connection stays open but nothing answers (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def source_config(url: str, nodes: list[dict[str, Any]], **endpoint: Any) -> OpcuaSourceConfig:
    """One endpoint named ``endpoint['name']`` (default ``test``) with fast test timings."""
    options: dict[str, Any] = {
        "name": "test",
        "url": url,
        "publishing_interval_ms": 50,
        "poll_interval_ms": 50,
        "keepalive_s": 0.5,
        "request_timeout_s": 2,
        "watchdog_interval_s": 0.5,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 1,
        "open_timeout_s": 30,
    }
    options.update(endpoint)
    return OpcuaSourceConfig.model_validate(
        {"tenant": "plant-a", "endpoints": [{**options, "nodes": nodes}]}
    )


def open_partition(config: OpcuaSourceConfig) -> OpcuaPartition:
    endpoint = config.endpoints[0].name
    return OpcuaSource(config).build_part("opcua", endpoint, None)


def collect(
    part: OpcuaPartition,
    done: Callable[[list[Reading]], bool],
    timeout: float = 30.0,
    what: str = "readings",
) -> list[Reading]:
    """Drive the partition like Bytewax does until ``done(readings)``; fail after ``timeout`` s."""
    readings: list[Reading] = []
    deadline = time.monotonic() + timeout
    while not done(readings):
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out waiting for {what}; got {len(readings)}: {readings[-5:]}", pytrace=False
            )
        readings += part.next_batch()
        time.sleep(0.02)
    return readings


def of_metric(readings: list[Reading], metric: str) -> list[Reading]:
    return [r for r in readings if r.metric == metric]
