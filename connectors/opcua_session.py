"""Keep one OPC UA endpoint connected and its readings flowing, across server restarts.

    buffer = HandoffBuffer(cfg.buffer_size, cfg.name)
    session = EndpointSession(cfg, tenant="default", buffer=buffer)
    await session.run(stop_event)        # returns when stop_event is set

Reconnect design. Every connection attempt builds a *new* asyncua Client,
session and subscription (:class:`_Connection`); nothing from a dead
session is reused, so a restarted server (which forgot our session,
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
does not know (yet) are retried every ``_NODE_RETRY_S`` while the session is
up, so a server that loads its address space late does not leave them dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from asyncua import Client, ua

from connectors.opcua_client import OpcuaOpenError, connect, make_client
from connectors.opcua_convert import (
    ReadingTarget,
    backoff_delay,
    data_change_filter,
    is_server_overflow,
    to_reading,
)
from connectors.opcua_handoff import HandoffBuffer
from flows.logs import get_logger
from flows.metrics import counter, gauge
from schemas.models import Reading
from schemas.sources.opcua import OpcuaEndpointConfig, OpcuaNodeConfig

_log = get_logger("connectors.opcua")

# asyncua logs every expected event of a lost connection (tracebacks included) on its
# own loggers; the session reports them once, in JSON. Raise the level to see asyncua's.
if logging.getLogger("asyncua").level == logging.NOTSET:
    logging.getLogger("asyncua").setLevel(os.environ.get("STREAMFORGE_ASYNCUA_LOG_LEVEL", "CRITICAL"))

NOTIFICATIONS = counter("streamforge_opcua_values_total", "Values received from OPC UA servers")
CONNECTED = gauge("streamforge_opcua_connected", "1 while the OPC UA endpoint has a live session")
RECONNECTS = counter("streamforge_opcua_reconnects_total", "Sessions re-established after a loss")
CONNECT_FAILURES = counter("streamforge_opcua_connect_failures_total", "Failed OPC UA connection attempts")
NODE_ERRORS = counter("streamforge_opcua_node_errors_total", "Nodes that could not be resolved or monitored")
SERVER_OVERFLOWS = counter(
    "streamforge_opcua_server_overflow_total", "Values the server reported dropping (Overflow bit)"
)
POLL_OVERRUNS = counter("streamforge_opcua_poll_overruns_total", "Polls that started late")

_CHUNK = 1000  # nodes per Read / TranslateBrowsePaths / CreateMonitoredItems request
_STABLE_S = 10.0
_NODE_RETRY_S = 10.0
_OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ConnectionLost(Exception):
    """A live connection was found dead (the message says how)."""


class NoNodesError(ConnectionLost):
    """Not one configured node could be resolved and monitored on the server."""


@dataclass(slots=True)
class _Node:
    """A configured node and what we know of it on the current server."""

    handle: int  # client handle: position in the config, 1-based
    config: OpcuaNodeConfig
    target: ReadingTarget
    node_id: ua.NodeId | None = None


def describe(exc: BaseException) -> str:
    """An exception as readable text, also when its message is empty (TimeoutError())."""
    text = str(exc)
    if isinstance(exc, ConnectionLost | OpcuaOpenError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _value_of(node_id: ua.NodeId | None) -> ua.ReadValueId:
    """The Value attribute of a node, as a read/monitor target."""
    target = ua.ReadValueId()
    target.NodeId = node_id
    target.AttributeId = ua.AttributeIds.Value
    return target


def parse_node_id(text: str) -> ua.NodeId:
    """A NodeId (``ns=2;i=5``) or ExpandedNodeId with namespace URI (``nsu=urn:x;s=A``); ValueError if bad."""
    try:
        return ua.NodeId.from_string(text)
    except Exception as exc:
        raise ValueError(f"{text!r} is not an OPC UA node id like ns=2;i=1001 or ns=2;s=Line1.Temp") from exc


def parse_browse_path(text: str) -> ua.RelativePath:
    """A browse path from the Objects folder (``2:Plant/2:Line1/2:Temp``); ValueError if bad."""
    try:
        return ua.RelativePath.from_string(text if text.startswith("/") else "/" + text)
    except Exception as exc:
        raise ValueError(f"{text!r} is not a browse path like 2:Plant/2:Line1/2:Temperature") from exc


class _Connection:
    """One connection attempt: client, session, subscription or polling loop."""

    def __init__(self, session: EndpointSession, client: Client) -> None:
        self.session = session
        self.cfg = session.cfg
        self.client = client
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.last_activity = time.monotonic()
        self.silence_limit_s = math.inf
        self.subscription_id: int | None = None
        self.poll_task: asyncio.Task[None] | None = None
        self.by_handle: dict[int, _Node] = {}
        self.missing: list[_Node] = []
        client.connection_lost_callback = self._on_connection_lost

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    async def _on_connection_lost(self, exc: Exception) -> None:
        self.mark_lost(f"watchdog could not read the server status: {exc!r}")

    # -- setup -------------------------------------------------------------

    async def start(self) -> None:
        """Resolve the nodes, then create the subscription or start polling."""
        nodes = [_Node(n.handle, n.config, n.target) for n in self.session.nodes]
        if self.cfg.mode == "subscription":
            await self._create_subscription()
        failures = await self._add_nodes(nodes)
        if not self.by_handle:
            reasons = "; ".join(f"{n.config.address}: {why}" for n, why in failures[:5])
            raise NoNodesError(f"none of the {len(nodes)} configured nodes is available on the server ({reasons})")
        if self.cfg.mode == "polling":
            self.poll_task = asyncio.create_task(self._poll_loop())

    async def _resolve(self, nodes: list[_Node]) -> list[tuple[_Node, str]]:
        """Fill in ``node_id`` of each node; return the failures with their reasons."""
        failures: list[tuple[_Node, str]] = []
        namespaces: list[str] | None = None
        by_path: list[_Node] = []
        for node in nodes:
            if node.config.browse_path is not None:
                by_path.append(node)
                continue
            parsed = self.session.parsed_ids[node.handle]
            assert parsed is not None
            uri = getattr(parsed, "NamespaceUri", None)
            if uri:
                if namespaces is None:
                    namespaces = await self.client.get_namespace_array()
                if uri not in namespaces:
                    failures.append((node, f"namespace {uri} unknown to the server"))
                    continue
                parsed = ua.NodeId(parsed.Identifier, namespaces.index(uri), parsed.NodeIdType)
            node.node_id = ua.NodeId(parsed.Identifier, parsed.NamespaceIndex, parsed.NodeIdType)
        for chunk in _chunks(by_path):
            paths = [self.session.parsed_paths[n.handle] for n in chunk]
            results = await self.client.translate_browsepaths(_OBJECTS, paths)
            for node, result in zip(chunk, results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    target = result.Targets[0].TargetId
                    node.node_id = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
                else:
                    failures.append((node, result.StatusCode.name))
        return failures

    async def _create_subscription(self) -> None:
        cfg = self.cfg
        keepalive_count = max(1, math.ceil(cfg.keepalive_s * 1000 / cfg.publishing_interval_ms))
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = cfg.publishing_interval_ms
        params.RequestedMaxKeepAliveCount = keepalive_count
        params.RequestedLifetimeCount = max(
            3 * keepalive_count, math.ceil(cfg.subscription_lifetime_s * 1000 / cfg.publishing_interval_ms)
        )
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        params.Priority = 0
        result = await self.client.uaclient.create_subscription(params, self._on_publish)
        self.subscription_id = result.SubscriptionId
        keepalive_s = result.RevisedMaxKeepAliveCount * result.RevisedPublishingInterval / 1000
        self.silence_limit_s = 3 * keepalive_s + cfg.request_timeout_s
        self.last_activity = time.monotonic()

    def _item_request(self, node: _Node) -> ua.MonitoredItemCreateRequest:
        cfg, ncfg = self.cfg, node.config
        sampling = ncfg.sampling_interval_ms if ncfg.sampling_interval_ms is not None else cfg.sampling_interval_ms
        deadband_type = ncfg.deadband_type or cfg.deadband_type
        deadband_value = ncfg.deadband_value if ncfg.deadband_value is not None else cfg.deadband_value
        params = ua.MonitoringParameters()
        params.ClientHandle = node.handle
        params.SamplingInterval = sampling
        params.QueueSize = ncfg.queue_size or cfg.queue_size
        params.DiscardOldest = True
        flt = data_change_filter(deadband_type, deadband_value)
        if flt is not None:
            params.Filter = flt
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = _value_of(node.node_id)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    async def _monitor(self, nodes: list[_Node]) -> list[tuple[_Node, str]]:
        failures: list[tuple[_Node, str]] = []
        for chunk in _chunks(nodes):
            for node in chunk:  # registered first: the server sends initial values at once
                self.by_handle[node.handle] = node
            params = ua.CreateMonitoredItemsParameters()
            params.SubscriptionId = self.subscription_id
            params.ItemsToCreate = [self._item_request(n) for n in chunk]
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            results = await self.client.uaclient.create_monitored_items(params)
            for node, result in zip(chunk, results, strict=True):
                if not result.StatusCode.is_good():
                    del self.by_handle[node.handle]
                    failures.append((node, result.StatusCode.name))
        return failures

    async def _check_exist(self, nodes: list[_Node]) -> list[tuple[_Node, str]]:
        """Polling mode: register the nodes whose NodeClass the server can read."""
        failures: list[tuple[_Node, str]] = []
        for chunk in _chunks(nodes):
            values = await self.client.uaclient.read_attributes([n.node_id for n in chunk],
                                                                ua.AttributeIds.NodeClass)
            for node, dv in zip(chunk, values, strict=True):
                if dv.StatusCode_ is not None and dv.StatusCode_.is_bad():
                    failures.append((node, dv.StatusCode_.name))
                else:
                    self.by_handle[node.handle] = node
        return failures

    async def _add_nodes(self, nodes: list[_Node]) -> list[tuple[_Node, str]]:
        """Resolve and monitor (or register for polling) nodes; remember and return the failures."""
        failures = await self._resolve(nodes)
        failed = {id(n) for n, _ in failures}
        ready = [n for n in nodes if id(n) not in failed]
        if self.cfg.mode == "subscription" and ready:
            failures += await self._monitor(ready)
        elif ready:
            failures += await self._check_exist(ready)
        self.missing = [n for n, _ in failures]
        if failures:
            NODE_ERRORS.inc(len(failures), endpoint=self.cfg.name)
            _log.error(
                "OPC UA nodes unavailable; retrying every %.0f s", _NODE_RETRY_S,
                extra={"device": self.cfg.name, "step": "subscribe", "failed": len(failures),
                       "nodes": [f"{n.config.address}: {why}" for n, why in failures[:10]]},
            )
        return failures

    # -- data --------------------------------------------------------------

    async def _on_publish(self, result: ua.PublishResult) -> None:
        """asyncua's publish callback: convert and hand over; the next Publish waits for us."""
        self.last_activity = time.monotonic()
        received = datetime.now(UTC)
        for notification in result.NotificationMessage.NotificationData or ():
            if isinstance(notification, ua.DataChangeNotification):
                readings: list[Reading] = []
                overflows = 0
                for item in notification.MonitoredItems:
                    node = self.by_handle.get(item.ClientHandle)
                    if node is None:
                        continue  # an item deleted a moment ago
                    readings.append(to_reading(item.Value, node.target, received))
                    overflows += is_server_overflow(item.Value.StatusCode_)
                if overflows:
                    SERVER_OVERFLOWS.inc(overflows, endpoint=self.cfg.name)
                    _log.warning("the server dropped values from its queues (Overflow bit)",
                                 extra={"device": self.cfg.name, "step": "publish", "items": overflows})
                NOTIFICATIONS.inc(len(readings), endpoint=self.cfg.name)
                await self.session.buffer.put(readings)
            elif isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                if not status.is_good():
                    self.mark_lost(f"subscription status changed to {status.name}")
        self.last_activity = time.monotonic()

    async def _poll_loop(self) -> None:
        interval = self.cfg.poll_interval_ms / 1000
        nodes = list(self.by_handle.values())
        next_at = time.monotonic()
        while True:
            readings: list[Reading] = []
            for chunk in _chunks(nodes):
                params = ua.ReadParameters()
                params.MaxAge = 0
                params.TimestampsToReturn = ua.TimestampsToReturn.Both
                params.NodesToRead = [_value_of(n.node_id) for n in chunk]
                values = await self.client.uaclient.read(params)
                received = datetime.now(UTC)
                readings += [to_reading(dv, n.target, received) for n, dv in zip(chunk, values, strict=True)]
            NOTIFICATIONS.inc(len(readings), endpoint=self.cfg.name)
            await self.session.buffer.put(readings)
            self.last_activity = time.monotonic()
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                POLL_OVERRUNS.inc(endpoint=self.cfg.name)
                next_at, delay = time.monotonic(), 0.0
            await asyncio.sleep(delay)
            if len(self.by_handle) != len(nodes):
                nodes = list(self.by_handle.values())  # retried nodes came back

    # -- liveness ----------------------------------------------------------

    async def watch(self, stop: asyncio.Event) -> None:
        """Return when ``stop`` is set; raise ConnectionLost when the connection dies."""
        tick = min(0.25, self.cfg.watchdog_interval_s)
        next_node_retry = time.monotonic() + _NODE_RETRY_S
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lost.wait(), tick)
            if self.lost.is_set():
                raise ConnectionLost(self.lost_reason)
            protocol = self.client.uaclient.protocol
            if protocol is None or protocol.state == protocol.CLOSED:
                raise ConnectionLost("the server closed the connection")
            try:
                await self.client.check_connection()
            except Exception as exc:
                raise ConnectionLost(f"client task failed: {exc!r}") from exc
            if self.poll_task is not None and self.poll_task.done():
                exc = self.poll_task.exception() if not self.poll_task.cancelled() else None
                raise ConnectionLost(f"polling failed: {exc!r}")
            silent = time.monotonic() - self.last_activity
            if not self.session.buffer.waiting and silent > self.silence_limit_s:
                raise ConnectionLost(f"no publish response or keep-alive for {silent:.1f} s")
            if self.missing and time.monotonic() >= next_node_retry:
                next_node_retry = time.monotonic() + _NODE_RETRY_S
                await self._add_nodes(self.missing)

    async def close(self) -> None:
        """Tear down, politely when the server still answers, bounded in time either way."""
        if self.poll_task is not None:
            self.poll_task.cancel()
            with contextlib.suppress(BaseException):
                await self.poll_task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), self.cfg.request_timeout_s)
        with contextlib.suppress(Exception):
            self.client.disconnect_socket()


class EndpointSession:
    """Connects one endpoint, re-connects it forever, and hands its readings to ``buffer``.

    ``opened`` is set after the first attempt; ``open_error`` then holds its
    exception (None on success) and ``open_fatal`` whether it was a
    configuration problem (an :class:`OpcuaOpenError`) rather than a
    transient one. A fatal first attempt ends :meth:`run`.
    """

    def __init__(self, cfg: OpcuaEndpointConfig, tenant: str, buffer: HandoffBuffer[Reading]) -> None:
        self.cfg = cfg
        self.buffer = buffer
        self.nodes = [
            _Node(i, n, ReadingTarget(cfg.tenant or tenant, n.device, n.metric, n.unit))
            for i, n in enumerate(cfg.nodes, start=1)
        ]
        # Parsed once so a typo fails when the source is built, not at the first connect.
        self.parsed_ids: dict[int, Any] = {
            n.handle: parse_node_id(n.config.node_id) for n in self.nodes if n.config.node_id is not None
        }
        self.parsed_paths: dict[int, ua.RelativePath] = {
            n.handle: parse_browse_path(n.config.browse_path)
            for n in self.nodes if n.config.browse_path is not None
        }
        self.opened = threading.Event()
        self.open_error: BaseException | None = None
        self.open_fatal = False
        self.sessions = 0

    def _first_outcome(self, error: BaseException | None) -> None:
        if not self.opened.is_set():
            self.open_error = error
            self.open_fatal = isinstance(error, OpcuaOpenError)
            self.opened.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read, detect loss, back off, reconnect; until ``stop`` is set."""
        cfg = self.cfg
        attempt = 0
        extra: dict[str, Any] = {"device": cfg.name, "step": "connect", "url": cfg.url}
        while not stop.is_set():
            connection: _Connection | None = None
            up_since: float | None = None
            try:
                client = await make_client(cfg)
                await connect(client, cfg)
                connection = _Connection(self, client)
                await connection.start()
                up_since = time.monotonic()
                self.sessions += 1
                CONNECTED.set(1, endpoint=cfg.name)
                if self.sessions > 1:
                    RECONNECTS.inc(endpoint=cfg.name)
                _log.info("OPC UA session up", extra={**extra, "session": self.sessions,
                                                      "nodes": len(connection.by_handle)})
                self._first_outcome(None)
                await connection.watch(stop)
            except asyncio.CancelledError:
                raise
            except Exception as caught:
                exc = caught
                if isinstance(exc, NoNodesError) and not self.opened.is_set():
                    exc = OpcuaOpenError(f"OPC UA endpoint {cfg.name!r} ({cfg.url}): {exc}")
                fatal = isinstance(exc, OpcuaOpenError)
                if up_since is None:
                    CONNECT_FAILURES.inc(endpoint=cfg.name)
                if fatal and not self.opened.is_set():
                    self._first_outcome(exc)
                    return
                self._first_outcome(exc)
                # Anything but an outage or a known protocol error is a bug: keep its traceback.
                expected = fatal or isinstance(exc, OSError | TimeoutError | ConnectionLost | ua.UaError)
                _log.log(40 if fatal or not expected else 30, "OPC UA connection %s: %s",
                         "lost" if up_since is not None else "failed", describe(exc),
                         extra={**extra, "attempt": attempt}, exc_info=None if expected else exc)
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
