"""One MQTT client of the MQTT source: connection, bounded queue, acknowledgements.

The semantics (partitions, delivery guarantee, backpressure, reconnects,
metrics) are described in :mod:`connectors.mqtt.source`; this module is the
machinery. paho's network thread runs the ``_on_*`` callbacks; Bytewax's
worker thread runs ``next_batch``, ``snapshot`` and ``close``. They share
only the deque (appends and pops are atomic), an Event that wakes a waiting
producer, and a lock around the connection generation and acknowledgements.

A partition connects when it is built and says at once why it cannot:

>>> from connectors.mqtt.client import MqttConnectError, parse_broker_url
>>> config = MqttSourceConfig(subscriptions=[{"topic": "plant/{device}/{metric}"}],
...                           connect_timeout=0.01)
>>> try:
...     MqttPartition(config, parse_broker_url("mqtt://127.0.0.1:1"), "streamforge-0")
... except MqttConnectError as exc:            # nothing listens on port 1
...     print(exc)
MQTT broker 127.0.0.1:1 not reachable within 0.01 s: ...Connection refused
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from bytewax.inputs import StatefulSourcePartition

from connectors.mqtt.client import (
    BrokerAddress,
    MqttConnectError,
    build_client,
    connect_arguments,
    subscription_requests,
)
from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.topics import TopicRouter
from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter, gauge
from schemas.models import RawMessage

__all__ = ["MqttConnectError", "MqttPartition"]

log = get_logger("connectors.mqtt.source")

RECEIVED = counter("streamforge_mqtt_messages_received_total", "MQTT messages received")
TAKEN = counter("streamforge_mqtt_messages_taken_total", "MQTT messages handed to the flow")
ACKED = counter("streamforge_mqtt_messages_acked_total", "QoS 1 messages acknowledged")
ACKS_SKIPPED = counter(
    "streamforge_mqtt_acks_skipped_total",
    "QoS 1 messages taken on a connection since lost; the broker redelivers them",
)
REDELIVERIES = counter(
    "streamforge_mqtt_redeliveries_dropped_total",
    "QoS 1 messages the broker delivered again after a reconnect, already handed to the flow",
)
QUEUE_DEPTH = gauge("streamforge_mqtt_queue_depth", "MQTT messages waiting for the flow")
QUEUE_FULL = counter(
    "streamforge_mqtt_queue_full_total", "Deliveries that waited for room in the full queue"
)
CONNECTED = gauge("streamforge_mqtt_connected", "1 while connected and subscribed")
DISCONNECTS = counter("streamforge_mqtt_disconnects_total", "Unexpected MQTT disconnects")
RECONNECTS = counter("streamforge_mqtt_reconnects_total", "MQTT reconnections")

_POLL = timedelta(milliseconds=5)
"""How long an idle partition waits before looking at the queue again."""

_Entry = tuple[RawMessage, int, int, int, bool, bool]
"""(message, packet id, QoS, connection generation, DUP flag, in the reconnection burst)
as queued by paho's thread."""

_Taken = tuple[int, int, RawMessage | None]
"""(packet id, connection generation, message) of a QoS 1 message handed to the flow."""

_BURST_GAP = 0.5
"""Seconds without a message that end the burst a broker sends right after a reconnection."""

_MAX_OWED = 1_000_000
"""Most redeliveries awaited at once; the oldest are forgotten beyond (never expected here)."""


class MqttPartition(StatefulSourcePartition[RawMessage, None]):
    """One MQTT client: its paho network thread fills a bounded queue that ``next_batch`` drains.

    Connects and subscribes in the constructor (raising :class:`MqttConnectError`
    when the broker refuses). The snapshot is always ``None`` (the broker keeps
    the session); ``snapshot`` marks the end of an epoch for ``ack: epoch``.
    """

    def __init__(
        self,
        config: MqttSourceConfig,
        address: BrokerAddress,
        client_id: str,
    ) -> None:
        self._config = config
        self._address = address
        self._client_id = client_id
        self._labels = {"source": config.name, "client": client_id}
        self._router = TopicRouter(config.subscriptions)
        self._requests = subscription_requests(config, config.shared_group)
        self._queue: deque[_Entry] = deque()
        self._room = threading.Event()
        self._received = 0  # written by paho's thread only; published by next_batch
        self._published = 0
        self._full_episodes = 0
        self._next_full_log = 0.0  # monotonic time before which "queue full" is not logged again
        # QoS 1 messages handed to the flow, not yet acknowledged.
        self._taken: list[_Taken] = []
        self._sealed: list[_Taken] = []
        # Redeliveries: a QoS 1 message handed to the flow on a connection lost
        # before its acknowledgement comes again (DUP) on the next one. It is
        # acknowledged then, not handed over twice (the flow would count it
        # twice). (topic, payload) -> how many copies are owed by the broker.
        self._owed: dict[tuple[str | None, bytes], int] = {}
        self._owed_generation = 0
        # The same for messages acknowledged in the last ``redelivery_window``
        # seconds: a broker that crashed and restarted from a save older than
        # our acknowledgements delivers them again (DUP). Oldest first.
        self._acked: dict[tuple[str | None, bytes], int] = {}
        self._acked_times: deque[tuple[float, tuple[str | None, bytes]]] = deque()
        # A broker restarted from a save older than those acknowledgements
        # restores them as *queued* messages and sends them first thing after
        # the reconnection, without DUP. So a message of that first burst
        # (messages following each other within _BURST_GAP, paho's thread
        # keeps _burst_until) that equals one acknowledged in the window is
        # taken for a redelivery too, up to the first one that is not: the
        # replay is over there. A device repeating one payload without a
        # timestamp at its own pace is not in the burst.
        self._burst_until = 0.0
        self._burst_over = -1  # the connection generation whose burst ended
        self._remaining = config.limit
        # Generation counts connections and disconnections: an ack is only valid on
        # the connection the message arrived on.
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._session_lost_generation = -1  # a connection that found no session
        self._connections = 0
        self._ready = threading.Event()
        self._open_error: str | None = None
        self._opened = False
        self._closing = False
        self._client = build_client(config, client_id, address)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_connect_fail = self._on_connect_fail
        self._open()

    # -- connection ---------------------------------------------------------

    def _extra(self, step: str, **more: Any) -> dict[str, Any]:
        return {"step": step, "broker": str(self._address), **self._labels, **more}

    def _open(self) -> None:
        """Connect and subscribe, or raise MqttConnectError saying why not."""
        config = self._config
        deadline = time.monotonic() + config.connect_timeout
        delay = float(config.reconnect_min_delay)
        while True:
            try:
                self._client.connect(
                    self._address.host,
                    self._address.port,
                    config.keepalive,
                    **connect_arguments(config),
                )
                break
            except ssl.SSLError as exc:
                raise MqttConnectError(
                    f"TLS connection to MQTT broker {self._address} failed: {exc}"
                ) from exc
            except OSError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MqttConnectError(
                        f"MQTT broker {self._address} not reachable within"
                        f" {config.connect_timeout:g} s: {exc}"
                    ) from exc
                log.warning(
                    "MQTT broker not reachable, retrying",
                    extra=self._extra("connect", error=str(exc), retry_in_s=min(delay, remaining)),
                )
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, config.reconnect_max_delay)
        self._client.loop_start()
        waited = self._ready.wait(max(deadline - time.monotonic(), 1.0))
        if self._open_error is not None or not waited:
            self._stop_client()
            raise MqttConnectError(
                self._open_error
                or f"MQTT broker {self._address} did not accept the connection"
                f" within {config.connect_timeout:g} s"
            )
        self._opened = True

    def _fail_open(self, message: str) -> None:
        """Record why opening failed (first reason wins) and wake ``_open``."""
        if self._open_error is None:
            self._open_error = message
        self._ready.set()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: Any,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            message = f"MQTT broker {self._address} refused the connection: {reason}"
            if not self._opened:
                self._fail_open(message)
            else:
                log.error(message, extra=self._extra("reconnect"))
            return
        session = bool(flags.session_present)
        # Only a kept session has anything to replay.
        self._burst_until = time.monotonic() + _BURST_GAP if session else 0.0
        with self._lock:
            self._generation += 1
            self._connected = True
            if not session:
                self._session_lost_generation = self._generation
        self._connections += 1
        if self._connections == 1:
            log.info("connected to MQTT broker", extra=self._extra("connect", session=session))
        else:
            RECONNECTS.inc(1.0, **self._labels)
            log.info("reconnected to MQTT broker", extra=self._extra("reconnect", session=session))
            if self._config.persistent_session and not session:
                log.warning(
                    "the broker had no session for this client: QoS 1 messages published"
                    " while disconnected may be lost (session expired or broker state lost)",
                    extra=self._extra("reconnect"),
                )
        # MQTT 5 re-subscribes every time (retainHandling=1 avoids retained replays);
        # MQTT 3.1.1 only when the broker lost the session or on this process's first
        # connection (the configured subscriptions may have changed).
        if self._config.protocol == "5" or not session or self._connections == 1:
            client.subscribe(self._requests)
        else:
            CONNECTED.set(1, **self._labels)
            self._ready.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        for (topic, options), reason in zip(self._requests, reasons, strict=False):
            if reason.is_failure:
                message = (
                    f"MQTT broker {self._address} refused the subscription to {topic}: {reason}"
                )
                if not self._opened:
                    self._fail_open(message)
                else:
                    log.error(message, extra=self._extra("subscribe", topic=topic))
                return
            wanted = options if isinstance(options, int) else options.QoS
            if reason.value < wanted:
                log.warning(
                    "broker granted a lower QoS than requested",
                    extra=self._extra("subscribe", topic=topic, granted=reason.value, qos=wanted),
                )
        CONNECTED.set(1, **self._labels)
        self._ready.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            self._generation += 1
            was_connected = self._connected
            self._connected = False
        CONNECTED.set(0, **self._labels)
        if self._closing:
            log.info("disconnected from MQTT broker", extra=self._extra("close"))
            return
        if not self._opened:
            hint = (
                "did it refuse our client certificate, or want one?"
                if self._address.tls or self._config.tls is not None
                else "is it a TLS listener (mqtts://)?"
            )
            self._fail_open(
                f"MQTT broker {self._address} closed the connection before accepting it"
                f" ({reason}): {hint}"
            )
            return
        if was_connected:
            DISCONNECTS.inc(1.0, **self._labels)
            log.warning(
                "disconnected from MQTT broker, reconnecting with backoff",
                extra=self._extra("disconnect", reason=str(reason), queued=len(self._queue)),
            )

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("MQTT reconnect attempt failed", extra=self._extra("reconnect"))

    # -- messages -------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Runs on paho's network thread: build the item, queue it, never raise.
        received_at = datetime.now(UTC)
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)  # paho keeps the raw bytes; a broker bug if reached
        route = self._router.route(topic)
        if route is None:
            raw = RawMessage(message.payload, "mqtt", received_at, topic)
        else:
            raw = RawMessage(message.payload, "mqtt", received_at, topic, route[1], route[0])
        now = time.monotonic()
        burst = now <= self._burst_until
        queue = self._queue
        if len(queue) >= self._config.queue_size:
            self._wait_for_room()
            now = time.monotonic()  # the broker's stream waited for us: still one burst
        if burst:
            self._burst_until = now + _BURST_GAP
        queue.append((raw, message.mid, message.qos, self._generation, bool(message.dup), burst))
        self._received += 1

    def _wait_for_room(self) -> None:
        """Block paho's thread until the flow takes from the full queue (backpressure)."""
        if not self._opened:
            # Messages of a resumed session can fill the queue before the SUBACK is
            # read; the connection works, so let the flow start draining.
            self._ready.set()
        self._full_episodes += 1
        QUEUE_FULL.inc(1.0, **self._labels)
        now = time.monotonic()
        if now >= self._next_full_log:
            self._next_full_log = now + 60.0
            log.warning(
                "MQTT queue full: not reading from the broker until the flow catches up",
                extra=self._extra(
                    "receive", queue_size=self._config.queue_size, episodes=self._full_episodes
                ),
            )
        limit = self._config.queue_size
        while len(self._queue) >= limit and not self._closing:
            self._room.clear()
            if len(self._queue) < limit:
                break
            self._room.wait(0.5)

    def _ack(self, pending: list[_Taken]) -> None:
        """PUBACK the messages taken on the current connection; skip the others."""
        if not pending:
            return
        acked = 0
        remember = self._config.redelivery_window > 0
        now = time.monotonic()
        with self._lock:
            current = self._generation if self._connected else -1
            for mid, generation, raw in pending:
                if generation == current:
                    self._client.ack(mid, 1)
                    acked += 1
                    if remember and raw is not None:
                        key = (raw.origin, raw.payload)
                        self._acked[key] = self._acked.get(key, 0) + 1
                        self._acked_times.append((now, key))
        if acked:
            ACKED.inc(acked, **self._labels)
        if acked < len(pending):
            ACKS_SKIPPED.inc(len(pending) - acked, **self._labels)

    def _expect_redeliveries(self, generation: int) -> None:
        """A newer connection than the taken messages': the broker owes those again.

        Runs in the flow's thread when the first message of connection
        ``generation`` is taken. Every QoS 1 message taken on an older
        connection and not acknowledged will be redelivered (with DUP) if the
        broker kept the session; they are noted to be recognised then.
        """
        self._owed_generation = generation
        with self._lock:
            session_lost = self._session_lost_generation == generation
        if session_lost:
            self._owed.clear()  # nothing comes back from a lost session
        stale = [t for t in (*self._sealed, *self._taken) if t[1] < generation]
        if not stale:
            return
        ACKS_SKIPPED.inc(len(stale), **self._labels)
        self._sealed = [t for t in self._sealed if t[1] >= generation]
        self._taken = [t for t in self._taken if t[1] >= generation]
        if session_lost:
            return
        self._owe(raw for _mid, _generation, raw in stale if raw is not None)

    def _owe(self, messages: Iterable[RawMessage]) -> None:
        """Note messages the broker will deliver again (DUP), to recognise them then."""
        owed = self._owed
        for raw in messages:
            key = (raw.origin, raw.payload)
            owed[key] = owed.get(key, 0) + 1
        while len(owed) > _MAX_OWED:
            del owed[next(iter(owed))]

    def _is_redelivery(self, raw: RawMessage) -> bool:
        """Whether a DUP message is one the flow already has (then it is expected once less)."""
        key = (raw.origin, raw.payload)
        for seen in (self._owed, self._acked):
            count = seen.get(key)
            if count:
                if count == 1:
                    del seen[key]
                else:
                    seen[key] = count - 1
                return True
        return False

    def _forget_acked(self) -> None:
        """Forget acknowledgements older than ``redelivery_window``."""
        times, acked = self._acked_times, self._acked
        horizon = time.monotonic() - self._config.redelivery_window
        while times and (times[0][0] < horizon or len(times) > _MAX_OWED):
            _, key = times.popleft()
            count = acked.get(key, 0)
            if count > 1:
                acked[key] = count - 1
            elif count:
                del acked[key]

    def next_batch(self) -> list[RawMessage]:
        """Acknowledge what is now safe, then hand over up to ``batch_size`` queued messages."""
        with self._lock:
            generation = self._generation
        if generation > self._owed_generation:
            self._expect_redeliveries(generation)
        if self._acked_times:
            self._forget_acked()
        if self._config.ack == "batch":
            self._ack(self._taken)
            self._taken = []
        elif self._sealed:
            self._ack(self._sealed)
            self._sealed = []
        if self._received != self._published:
            received = self._received
            RECEIVED.inc(received - self._published, **self._labels)
            self._published = received
        if self._remaining == 0:
            raise StopIteration
        queue = self._queue
        count = min(len(queue), self._config.batch_size)
        if self._remaining is not None:
            count = min(count, self._remaining)
            self._remaining -= count
        batch: list[RawMessage] = []
        taken = self._taken
        redelivered = 0
        for _ in range(count):
            raw, mid, qos, generation, dup, burst = queue.popleft()
            if not qos:
                batch.append(raw)
                continue
            if generation > self._owed_generation:
                self._expect_redeliveries(generation)
                taken = self._taken
            elif generation < self._owed_generation:
                # Received on a connection already lost, still queued then: it can
                # never be acknowledged, and the broker delivers it again (DUP) if
                # it kept the session (a session found lost clears what is owed).
                if self._session_lost_generation != self._owed_generation:
                    self._owe((raw,))
                ACKS_SKIPPED.inc(1.0, **self._labels)
                batch.append(raw)
                continue
            if burst and not dup and generation != self._burst_over:
                if (self._owed or self._acked) and self._is_redelivery(raw):
                    taken.append((mid, generation, None))  # a restored, acknowledged message
                    redelivered += 1
                    continue
                self._burst_over = generation  # a new message: the replay is over
            if dup and (self._owed or self._acked) and self._is_redelivery(raw):
                # Acknowledged with this epoch's messages, after the first copy's.
                taken.append((mid, generation, None))
                redelivered += 1
                continue
            batch.append(raw)
            taken.append((mid, generation, raw))
        if redelivered:
            REDELIVERIES.inc(redelivered, **self._labels)
        self._room.set()
        if count:
            TAKEN.inc(count, **self._labels)
        QUEUE_DEPTH.set(len(queue), **self._labels)
        return batch

    def next_awake(self) -> datetime | None:
        """Right away while messages wait, else after a short poll interval."""
        return None if self._queue else datetime.now(UTC) + _POLL

    def snapshot(self) -> None:
        """End of an epoch: what was taken in it may be acknowledged once the next one starts."""
        if self._taken and self._config.ack == "epoch":
            self._sealed.extend(self._taken)
            self._taken = []
        return None

    def close(self) -> None:
        """Disconnect (a persistent session stays on the broker with what was not acknowledged)."""
        if self._config.ack == "batch":
            self._ack(self._taken)
            self._taken = []
        left = len(self._queue)
        self._stop_client()
        log.info(
            "MQTT source closed",
            extra=self._extra(
                "close", unacknowledged=len(self._taken) + len(self._sealed), queued=left
            ),
        )

    def _stop_client(self) -> None:
        self._closing = True
        self._room.set()
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
        CONNECTED.set(0, **self._labels)
