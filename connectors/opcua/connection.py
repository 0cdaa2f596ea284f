"""One connection to an OPC UA endpoint: subscribe or poll, hand readings over, watch its health.

>>> import asyncio
>>> from connectors.opcua.config import OpcuaEndpointConfig
>>> cfg = OpcuaEndpointConfig.model_validate({"name": "line1", "url": "opc.tcp://127.0.0.1:4840",
...     "nodes": [{"node_id": "ns=2;i=1", "device": "press-1", "metric": "temperature"}]})
>>> plan, buffer = NodePlan(cfg, tenant="default"), HandoffBuffer(cfg.buffer_size, cfg.name)
>>> async def one_connection(client: Client, stop: asyncio.Event) -> None:
...     connection = Connection(plan, buffer, client)   # client: connected asyncua Client
...     await connection.start()           # subscription + monitored items, or polling
...     try:
...         await connection.watch(stop)   # raises ConnectionLostError when it dies
...     finally:
...         await connection.close()
>>> asyncio.run(one_connection(client, stop))  # doctest: +SKIP

Why a connection died is logged in words, also for exceptions without a
message:

>>> describe(TimeoutError()), describe(ConnectionLostError("socket closed"))
('TimeoutError', 'socket closed')
>>> describe(ConnectionRefusedError(111, "Connection refused"))
'ConnectionRefusedError: [Errno 111] Connection refused'

A Connection is never reused: :mod:`connectors.opcua.session` makes a new
one (new client, session, subscription) for every attempt. ``watch``
declares the connection dead on the first of: socket closed; asyncua's
watchdog failing to read ServerStatus; a bad StatusChangeNotification
(BadTimeout: subscription expired, BadShutdown); a failed client background
task; no Publish response, not even a keep-alive, for 3 keep-alive periods
plus the request timeout (a half-open connection, or a server that dropped
the subscription) unless the hand-over buffer is what holds publishing back;
in polling mode, a failed Read. Nodes the server does not know (yet) are
retried every ``NODE_RETRY_S`` while the connection lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from datetime import UTC, datetime

from asyncua import Client, ua

from connectors.opcua.client import OpcuaOpenError
from connectors.opcua.convert import is_server_overflow, to_reading
from connectors.opcua.handoff import HandoffBuffer
from connectors.opcua.nodes import ConfiguredNode, Failure, NodePlan, chunks, value_of
from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter
from schemas.models import Reading

_log = get_logger("connectors.opcua.source")

VALUES = counter("streamforge_opcua_values_total", "Values received from OPC UA servers")
NODE_ERRORS = counter(
    "streamforge_opcua_node_errors_total", "Nodes that could not be resolved or monitored"
)
SERVER_OVERFLOWS = counter(
    "streamforge_opcua_server_overflow_total", "Values the server reported dropping (Overflow bit)"
)
POLL_OVERRUNS = counter("streamforge_opcua_poll_overruns_total", "Polls that started late")

NODE_RETRY_S = 10.0


class ConnectionLostError(Exception):
    """A live connection was found dead (the message says how)."""


class NoNodesError(ConnectionLostError):
    """Not one configured node could be resolved and monitored on the server."""


def describe(exc: BaseException) -> str:
    """An exception as readable text, also when its message is empty (TimeoutError())."""
    text = str(exc)
    if isinstance(exc, ConnectionLostError | OpcuaOpenError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Connection:
    """One connection attempt: client, session, subscription or polling loop, and its health."""

    def __init__(self, plan: NodePlan, buffer: HandoffBuffer[Reading], client: Client) -> None:
        self.plan = plan
        self.buffer = buffer
        self.cfg = plan.cfg
        self.client = client
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.last_activity = time.monotonic()
        self.silence_limit_s = math.inf
        self.subscription_id: int | None = None
        self.poll_task: asyncio.Task[None] | None = None
        self.by_handle: dict[int, ConfiguredNode] = {}
        self.missing: list[ConfiguredNode] = []
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
        nodes = self.plan.fresh()
        if self.cfg.mode == "subscription":
            await self._create_subscription()
        failures = await self._add_nodes(nodes)
        if not self.by_handle:
            reasons = "; ".join(f"{n.config.address}: {why}" for n, why in failures[:5])
            raise NoNodesError(
                f"none of the {len(nodes)} configured nodes is available on the server ({reasons})"
            )
        self.last_activity = time.monotonic()  # creating many items can outlast the silence limit
        if self.cfg.mode == "polling":
            self.poll_task = asyncio.create_task(self._poll_loop())

    async def _create_subscription(self) -> None:
        cfg = self.cfg
        keepalive_count = max(1, math.ceil(cfg.keepalive_s * 1000 / cfg.publishing_interval_ms))
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = cfg.publishing_interval_ms
        params.RequestedMaxKeepAliveCount = keepalive_count
        params.RequestedLifetimeCount = max(
            3 * keepalive_count,
            math.ceil(cfg.subscription_lifetime_s * 1000 / cfg.publishing_interval_ms),
        )
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        params.Priority = 0
        result = await self.client.uaclient.create_subscription(params, self._on_publish)
        self.subscription_id = result.SubscriptionId
        keepalive_s = result.RevisedMaxKeepAliveCount * result.RevisedPublishingInterval / 1000
        self.silence_limit_s = 3 * keepalive_s + cfg.request_timeout_s
        self.last_activity = time.monotonic()

    async def _monitor(self, nodes: list[ConfiguredNode]) -> list[Failure]:
        failures: list[Failure] = []
        for chunk in chunks(nodes):
            for node in chunk:  # registered first: the server sends initial values at once
                self.by_handle[node.handle] = node
            params = ua.CreateMonitoredItemsParameters()
            params.SubscriptionId = self.subscription_id
            params.ItemsToCreate = [self.plan.item_request(n) for n in chunk]
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            results = await self.client.uaclient.create_monitored_items(params)
            for node, result in zip(chunk, results, strict=True):
                if not result.StatusCode.is_good():
                    del self.by_handle[node.handle]
                    failures.append((node, result.StatusCode.name))
        return failures

    async def _check_exist(self, nodes: list[ConfiguredNode]) -> list[Failure]:
        """Polling mode: register the nodes whose NodeClass the server can read."""
        failures: list[Failure] = []
        for chunk in chunks(nodes):
            values = await self.client.uaclient.read_attributes(
                [n.node_id for n in chunk], ua.AttributeIds.NodeClass
            )
            for node, dv in zip(chunk, values, strict=True):
                if dv.StatusCode_ is not None and dv.StatusCode_.is_bad():
                    failures.append((node, dv.StatusCode_.name))
                else:
                    self.by_handle[node.handle] = node
        return failures

    async def _add_nodes(self, nodes: list[ConfiguredNode]) -> list[Failure]:
        """Resolve and monitor (or register for polling) nodes; remember and return the failures."""
        failures = await self.plan.resolve(self.client, nodes)
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
                "OPC UA nodes unavailable; retrying every %.0f s",
                NODE_RETRY_S,
                extra={
                    "device": self.cfg.name,
                    "step": "subscribe",
                    "failed": len(failures),
                    "nodes": [f"{n.config.address}: {why}" for n, why in failures[:10]],
                },
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
                    _log.warning(
                        "the server dropped values from its queues (Overflow bit)",
                        extra={"device": self.cfg.name, "step": "publish", "items": overflows},
                    )
                VALUES.inc(len(readings), endpoint=self.cfg.name)
                await self.buffer.put(readings)
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
            for chunk in chunks(nodes):
                params = ua.ReadParameters()
                params.MaxAge = 0
                params.TimestampsToReturn = ua.TimestampsToReturn.Both
                params.NodesToRead = [value_of(n.node_id) for n in chunk]
                values = await self.client.uaclient.read(params)
                received = datetime.now(UTC)
                readings += [
                    to_reading(dv, n.target, received) for n, dv in zip(chunk, values, strict=True)
                ]
            VALUES.inc(len(readings), endpoint=self.cfg.name)
            await self.buffer.put(readings)
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
        """Return when ``stop`` is set; raise ConnectionLostError when the connection dies."""
        tick = min(0.25, self.cfg.watchdog_interval_s)
        next_node_retry = time.monotonic() + NODE_RETRY_S
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lost.wait(), tick)
            if self.lost.is_set():
                raise ConnectionLostError(self.lost_reason)
            protocol = self.client.uaclient.protocol
            if protocol is None or protocol.state == protocol.CLOSED:
                raise ConnectionLostError("the server closed the connection")
            try:
                await self.client.check_connection()
            except Exception as exc:
                raise ConnectionLostError(f"client task failed: {exc!r}") from exc
            if self.poll_task is not None and self.poll_task.done():
                error = self.poll_task.exception() if not self.poll_task.cancelled() else None
                reason = describe(error) if error is not None else "cancelled"
                raise ConnectionLostError(f"polling failed: {reason}")
            silent = time.monotonic() - self.last_activity
            if not self.buffer.waiting and silent > self.silence_limit_s:
                raise ConnectionLostError(f"no publish response or keep-alive for {silent:.1f} s")
            if self.missing and time.monotonic() >= next_node_retry:
                next_node_retry = time.monotonic() + NODE_RETRY_S
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
