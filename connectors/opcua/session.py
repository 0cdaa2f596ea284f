"""Keep one OPC UA endpoint connected and its readings flowing, across server restarts.

>>> import asyncio
>>> cfg = OpcuaEndpointConfig.model_validate({"name": "line1", "url": "opc.tcp://127.0.0.1:4840",
...     "nodes": [{"node_id": "ns=2;s=Line1.Temperature", "device": "press-1",
...                "metric": "temperature"}]})
>>> buffer = HandoffBuffer(cfg.buffer_size, cfg.name)
>>> session = EndpointSession(cfg, tenant="default", buffer=buffer)
>>> session.opened.is_set(), [n.target.device for n in session.plan.nodes]
(False, ['press-1'])
>>> stop_event = asyncio.Event()
>>> asyncio.run(session.run(stop_event))  # returns when stop_event is set  # doctest: +SKIP

The nodes are parsed when the session is made, so a typo fails there and
not at the first connect:

>>> typo = cfg.model_copy(update={"nodes": [cfg.nodes[0].model_copy(update={"node_id": "Temp"})]})
>>> EndpointSession(typo, tenant="default", buffer=buffer)
Traceback (most recent call last):
    ...
ValueError: 'Temp' is not an OPC UA node id like ns=2;i=1001 or ns=2;s=Line1.Temp

Reconnect design. Every connection attempt builds a *new* asyncua Client,
session and subscription (a :class:`~connectors.opcua.connection.Connection`);
nothing from a dead session is reused, so a restarted server (which forgot our session,
subscription and monitored items, and may have renumbered nodes) is handled
the same way as the first connect: browse paths and ``nsu=`` namespace
URIs are resolved again, the subscription and monitored items re-created.
A connection is declared dead by the first of:

- the TCP socket closed (server killed or restarted);
- asyncua's watchdog failed to read ServerStatus (``connection_lost_callback``);
- a bad StatusChangeNotification (BadTimeout: subscription expired; BadShutdown);
- a background task of the client failed (``Client.check_connection``);
- no Publish response, not even a keep-alive, for 3 keep-alive periods plus
  the request timeout (a half-open connection or a server that dropped the
  subscription), unless we are the ones pausing it (hand-over buffer full);
- in polling mode, a failed Read.

Then the connection is torn down (bounded by the request timeout) and the
next attempt waits ``backoff_delay`` (exponential from
``reconnect_initial_s`` to ``reconnect_max_s``, jittered); the backoff
resets once a session has stayed up for ``_STABLE_S``. Nodes that a server
does not know (yet) are retried every ``NODE_RETRY_S`` while the session is
up, so a server that loads its address space late does not leave them dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import Any

from asyncua import ua

from connectors.opcua.client import OpcuaOpenError, connect, make_client
from connectors.opcua.config import OpcuaEndpointConfig
from connectors.opcua.connection import (
    Connection,
    ConnectionLostError,
    NoNodesError,
    describe,
)
from connectors.opcua.convert import backoff_delay
from connectors.opcua.handoff import HandoffBuffer
from connectors.opcua.nodes import NodePlan
from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter, gauge
from schemas.models import Reading

_log = get_logger("connectors.opcua.source")

# asyncua logs every expected event of a lost connection (tracebacks included) on its
# own loggers; the session reports each once, in JSON. Set this variable to see asyncua's.
if logging.getLogger("asyncua").level == logging.NOTSET:
    logging.getLogger("asyncua").setLevel(
        os.environ.get("STREAMFORGE_ASYNCUA_LOG_LEVEL", "CRITICAL")
    )

CONNECTED = gauge("streamforge_opcua_connected", "1 while the OPC UA endpoint has a live session")
RECONNECTS = counter("streamforge_opcua_reconnects_total", "Sessions re-established after a loss")
CONNECT_FAILURES = counter(
    "streamforge_opcua_connect_failures_total", "Failed OPC UA connection attempts"
)

_STABLE_S = 10.0  # a session up this long resets the backoff


class EndpointSession:
    """Connects one endpoint, re-connects it forever, and hands its readings to ``buffer``.

    ``opened`` is set after the first attempt; ``open_error`` then holds its
    exception (None on success) and ``open_fatal`` whether it was a
    configuration problem (an :class:`OpcuaOpenError`) rather than a
    transient one. A fatal first attempt ends :meth:`run`.
    """

    def __init__(
        self, cfg: OpcuaEndpointConfig, tenant: str, buffer: HandoffBuffer[Reading]
    ) -> None:
        self.cfg = cfg
        self.buffer = buffer
        # Parsed now so a typo fails when the source is built, not at the first connect.
        self.plan = NodePlan(cfg, tenant)
        self.opened = threading.Event()
        self.open_error: BaseException | None = None
        self.open_fatal = False
        self.sessions = 0

    def _first_outcome(self, error: BaseException | None) -> None:
        if not self.opened.is_set():
            self.open_error = error
            self.open_fatal = isinstance(error, OpcuaOpenError)
            self.opened.set()

    def _failed(self, exc: Exception, connected: bool, attempt: int) -> bool:
        """Record and log a failed attempt or lost session; False when the session must end."""
        cfg = self.cfg
        if isinstance(exc, NoNodesError) and not self.opened.is_set():
            exc = OpcuaOpenError(f"OPC UA endpoint {cfg.name!r} ({cfg.url}): {exc}")
        fatal = isinstance(exc, OpcuaOpenError)
        if not connected:
            CONNECT_FAILURES.inc(endpoint=cfg.name)
        if fatal and not self.opened.is_set():
            self._first_outcome(exc)  # the partition raises it; no retry loop behind its back
            return False
        self._first_outcome(exc)
        # Anything but an outage or a known protocol error is a bug: keep its traceback.
        expected = fatal or isinstance(
            exc, OSError | TimeoutError | ConnectionLostError | ua.UaError
        )
        _log.log(
            logging.ERROR if fatal or not expected else logging.WARNING,
            "OPC UA connection %s: %s",
            "lost" if connected else "failed",
            describe(exc),
            extra={"device": cfg.name, "step": "connect", "url": cfg.url, "attempt": attempt},
            exc_info=None if expected else exc,
        )
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read, detect loss, back off, reconnect; until ``stop`` is set."""
        cfg = self.cfg
        attempt = 0
        extra: dict[str, Any] = {"device": cfg.name, "step": "connect", "url": cfg.url}
        while not stop.is_set():
            connection: Connection | None = None
            up_since: float | None = None
            try:
                client = await make_client(cfg)
                await connect(client, cfg)
                connection = Connection(self.plan, self.buffer, client)
                await connection.start()
                up_since = time.monotonic()
                self.sessions += 1
                CONNECTED.set(1, endpoint=cfg.name)
                if self.sessions > 1:
                    RECONNECTS.inc(endpoint=cfg.name)
                _log.info(
                    "OPC UA session up",
                    extra={**extra, "session": self.sessions, "nodes": len(connection.by_handle)},
                )
                self._first_outcome(None)
                await connection.watch(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._failed(exc, connected=up_since is not None, attempt=attempt):
                    return
            finally:
                CONNECTED.set(0, endpoint=cfg.name)
                if connection is not None:
                    await connection.close()
            if up_since is not None and time.monotonic() - up_since >= _STABLE_S:
                attempt = 0
            delay = backoff_delay(attempt, cfg.reconnect_initial_s, cfg.reconnect_max_s)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
