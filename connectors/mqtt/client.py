"""Build a paho-mqtt 2.x client from an MqttSourceConfig: auth, TLS, session, flow control.

>>> from connectors.mqtt.config import MqttSourceConfig
>>> config = MqttSourceConfig(url="mqtts://broker.example:8884",
...                           subscriptions=[{"topic": "plant/{device}/{metric}"}])
>>> parse_broker_url(config.url)
BrokerAddress(host='broker.example', port=8884, tls=True)
>>> subscription_requests(config, "plant-share")[0][0]
'$share/plant-share/plant/+/+'

Only construction lives here; the connection's life (callbacks, queue,
acknowledgements) is :mod:`connectors.mqtt.source`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from connectors.mqtt.config import MqttSourceConfig

_PLAIN_SCHEMES = {"mqtt": 1883, "tcp": 1883}
_TLS_SCHEMES = {"mqtts": 8883, "ssl": 8883}


class _Client(mqtt.Client):
    """paho's client, reading up to 256 packets per network-loop round instead of one.

    paho 2.x's ``loop_read`` ignores its ``max_packets`` argument and reads a
    single packet per ``select()`` round (plus a write and keep-alive pass);
    draining what the socket already holds saves that per-round overhead on
    every received message. Falls back to paho's own ``loop_read`` if its
    private reader is not there.
    """

    _BURST = 256

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        read = getattr(self, "_packet_read", None)
        handle = getattr(self, "_loop_rc_handle", None)
        if read is None or handle is None:  # a paho without them: its own reader
            return super().loop_read(max_packets)
        for _ in range(self._BURST):
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = read()
            if rc > 0:
                result: mqtt.MQTTErrorCode = handle(rc)
                return result
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


class MqttConnectError(RuntimeError):
    """The broker cannot be used: refused the connection or subscription, TLS failed, unreachable.

    Raised when the source starts, so a wrong host, password or certificate
    stops the flow with this message instead of retrying for ever.
    """


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker listens and whether to speak TLS."""

    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` (plain, default 1883) or ``mqtts://host[:port]`` (TLS, 8883)."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme not in _PLAIN_SCHEMES and scheme not in _TLS_SCHEMES:
        raise ValueError(f"MQTT url {url!r}: scheme must be mqtt:// or mqtts://")
    if not parsed.hostname:
        raise ValueError(f"MQTT url {url!r} has no host")
    default_port = _TLS_SCHEMES.get(scheme) or _PLAIN_SCHEMES[scheme]
    return BrokerAddress(parsed.hostname, parsed.port or default_port, scheme in _TLS_SCHEMES)


def tls_context(config: MqttSourceConfig) -> ssl.SSLContext:
    """A client TLS context: the configured CA (else the system's), optional client certificate."""
    tls = config.tls
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls is not None and tls.ca_file is not None else None
    )
    if tls is not None and tls.cert_file is not None:
        context.load_cert_chain(
            str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
        )
    if tls is not None and tls.insecure:
        context.check_hostname = False
    return context


def build_client(config: MqttSourceConfig, client_id: str, address: BrokerAddress) -> mqtt.Client:
    """A paho client (callback API v2, manual acknowledgements), not yet connected.

    MQTT 3.1.1 sessions are made persistent here (``clean_session=False``);
    MQTT 5 ones by :func:`connect_arguments`.
    """
    v5 = config.protocol == "5"
    client = _Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else not config.persistent_session,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        reconnect_on_failure=True,
        # PUBACK is sent by connectors.mqtt.source once the flow has taken the message.
        manual_ack=True,
    )
    if config.username is not None:
        client.username_pw_set(config.username, config.resolved_password())
    if address.tls or config.tls is not None:
        client.tls_set_context(tls_context(config))
    # paho doubles the wait after each failed attempt, from min to max.
    client.reconnect_delay_set(config.reconnect_min_delay, config.reconnect_max_delay)
    client.connect_timeout = min(config.connect_timeout, 10.0)
    return client


def connect_arguments(config: MqttSourceConfig) -> dict[str, Any]:
    """Keyword arguments of ``Client.connect`` beyond host, port and keep-alive.

    MQTT 5: ``clean_start`` false with a session expiry keeps the session;
    ``ReceiveMaximum`` makes the broker stop sending once that many QoS 1
    messages are unacknowledged -- the backpressure that never blocks
    paho's network thread.
    """
    if config.protocol != "5":
        return {}
    properties = Properties(PacketTypes.CONNECT)
    properties.ReceiveMaximum = config.receive_maximum
    if config.persistent_session:
        properties.SessionExpiryInterval = int(config.session_expiry)
    return {"clean_start": not config.persistent_session, "properties": properties}


def subscription_requests(
    config: MqttSourceConfig, shared_group: str | None
) -> list[tuple[str, Any]]:
    """``(filter, options)`` pairs for ``Client.subscribe``; options are a QoS for MQTT 3.1.1.

    For MQTT 5, ``retainHandling=1`` asks for retained messages only when a
    subscription is new, so re-subscribing after a reconnect with a resumed
    session does not replay them.
    """
    prefix = f"$share/{shared_group}/" if shared_group else ""
    requests: list[tuple[str, Any]] = []
    for sub in config.subscriptions:
        topic = prefix + sub.filter
        if config.protocol == "5":
            requests.append((topic, SubscribeOptions(qos=sub.qos, retainHandling=1)))
        else:
            requests.append((topic, sub.qos))
    return requests
