"""Configuration of the MQTT source (``source.py``; every option in ``README.md``).

>>> config = MqttSourceConfig(subscriptions=[{"topic": "plant/{site}/{device}/{metric}"}])
>>> config.subscriptions[0].filter
'plant/+/+/+'
>>> config.subscriptions[0].fields
('site', 'device', 'metric')
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_FIELD = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def parse_topic_template(template: str) -> list[str | None]:
    """The levels of a topic template: a literal or wildcard level as text, a field as None.

    A template is an MQTT topic filter whose levels may also be ``{field}``:
    ``plant/{site}/{device}/{metric}`` subscribes to ``plant/+/+/+`` and puts
    the 2nd, 3rd and 4th level of each topic into the fields ``site``,
    ``device`` and ``metric``. ``+`` and a final ``#`` match without
    capturing. Raises ValueError naming the problem.
    """
    if not template:
        raise ValueError("topic template must not be empty")
    if template.startswith("$share/"):
        raise ValueError("give the group in shared_group, not as a $share/ prefix of the topic")
    levels = template.split("/")
    result: list[str | None] = []
    seen: set[str] = set()
    for index, level in enumerate(levels):
        match = _FIELD.match(level)
        if match:
            name = match.group(1)
            if name in seen:
                raise ValueError(f"field {{{name}}} appears twice in topic {template!r}")
            seen.add(name)
            result.append(None)
            continue
        if "{" in level or "}" in level:
            raise ValueError(
                f"level {level!r} of topic {template!r}: a field must fill a whole level,"
                " like {device}"
            )
        if level == "#" and index != len(levels) - 1:
            raise ValueError(f"'#' must be the last level of topic {template!r}")
        if level not in ("+", "#") and ("+" in level or "#" in level):
            raise ValueError(f"level {level!r} of topic {template!r} mixes a wildcard with text")
        result.append(level)
    return result


def filters_overlap(first: str, second: str) -> bool:
    """Whether some topic matches both MQTT topic filters (``+`` one level, ``#`` the rest)."""
    a, b = first.split("/"), second.split("/")
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True


def template_fields(template: str) -> tuple[str, ...]:
    """The field names of a topic template, in level order."""
    return tuple(
        m.group(1) for level in template.split("/") if (m := _FIELD.match(level)) is not None
    )


class MqttSubscription(BaseModel):
    """One subscription of an MQTT source: a topic template, its QoS and payload format.

    ``format`` tells the decoder what the payloads on this topic are:
    ``object`` (one reading as a JSON object), ``array`` (a JSON array of
    reading objects, a batch), ``number`` (a bare number; device and metric
    must then come from topic fields or ``defaults``) or ``auto`` (any of
    these). ``defaults`` are fixed field values for every payload of the
    subscription (``tenant``, ``unit``, ``device``...); fields taken from the
    topic override them and the payload's own fields override both.
    """

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(description="topic template, e.g. plant/{site}/{device}/{metric}")
    qos: Literal[0, 1] = Field(
        1, description="1: at least once (acknowledged after the flow took it); 0: at most once"
    )
    format: Literal["auto", "object", "array", "number"] = "auto"
    defaults: dict[str, str] = Field(default_factory=dict)

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, topic: str) -> str:
        parse_topic_template(topic)
        return topic

    @property
    def filter(self) -> str:
        """The MQTT topic filter subscribed to: every ``{field}`` level becomes ``+``."""
        return "/".join(
            "+" if level is None else level for level in parse_topic_template(self.topic)
        )

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the fields the topic levels fill, in level order."""
        return template_fields(self.topic)


class MqttTlsConfig(BaseModel):
    """TLS towards the broker. Without ``ca_file`` the system's CA certificates are trusted."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(None, description="PEM file of the CA(s) to trust")
    cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="PEM private key of cert_file")
    insecure: bool = Field(False, description="skip the host name check (test setups only)")

    @model_validator(mode="after")
    def _check_pair(self) -> MqttTlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class MqttSourceConfig(BaseModel):
    """An MQTT broker and the subscriptions StreamForge reads from it.

    Every option is documented with its exact semantics in
    ``connectors/mqtt/sample.yaml``; the connector is ``connectors/mqtt/source.py``.
    ``clients`` MQTT connections are opened (Bytewax partitions, spread over
    the workers), with client ids ``<client_id>-0``, ``<client_id>-1``...;
    more than one needs ``shared_group`` so the broker gives each message
    to exactly one of them.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["mqtt"] = "mqtt"
    name: str = "mqtt"
    url: str | None = Field(
        None, description="mqtt://host:port or mqtts://host:port; unset: Settings.mqtt_url"
    )
    subscriptions: list[MqttSubscription] = Field(min_length=1)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str = Field("streamforge", min_length=1, max_length=100)
    clients: int = Field(1, ge=1, le=256, description="MQTT connections (Bytewax partitions)")
    shared_group: str | None = Field(
        None, min_length=1, description="subscribe as $share/<group>/<filter>"
    )
    persistent_session: bool = Field(
        True, description="keep the session (and queued QoS 1 messages) while disconnected"
    )
    session_expiry: float = Field(
        86400.0, ge=0, description="MQTT 5: seconds the broker keeps a disconnected session"
    )
    keepalive: int = Field(30, ge=5, le=65535, description="seconds")
    receive_maximum: int = Field(
        10_000, ge=1, le=65535, description="MQTT 5: most unacknowledged QoS 1 messages in flight"
    )
    queue_size: int = Field(
        20_000, ge=1, description="bounded queue between the MQTT thread and the flow"
    )
    batch_size: int = Field(2_000, ge=1, description="most messages handed to the flow at once")
    ack: Literal["epoch", "batch"] = Field(
        "epoch", description="when QoS 1 messages are acknowledged (see connectors/mqtt/source.py)"
    )
    redelivery_window: float = Field(
        60.0,
        ge=0,
        description="seconds an acknowledged QoS 1 message is remembered, to recognise the "
        "broker delivering it again after losing the acknowledgement in a crash",
    )
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = Field(None, description="read the password from this variable")
    tls: MqttTlsConfig | None = None
    connect_timeout: float = Field(
        30.0, gt=0, description="seconds the first connection may take before start-up fails"
    )
    reconnect_min_delay: int = Field(1, ge=1, description="seconds; doubles up to the max")
    reconnect_max_delay: int = Field(60, ge=1, description="seconds")
    limit: int | None = Field(
        None, ge=0, description="stop after this many messages per client (tests, benchmarks)"
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as an int and `protocol: 3.1.1` as a string.
        return str(value) if isinstance(value, int | float) else value

    @field_validator("session_expiry", "connect_timeout", "redelivery_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        from schemas.durations import parse_duration

        return parse_duration(value)

    @model_validator(mode="after")
    def _check(self) -> MqttSourceConfig:
        if self.clients > 1 and self.shared_group is None:
            raise ValueError(
                "clients > 1 needs shared_group, else every client receives every message"
            )
        if self.queue_size < self.receive_maximum:
            raise ValueError(
                "queue_size must be >= receive_maximum, so QoS 1 deliveries never wait for room"
            )
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise ValueError("reconnect_max_delay must be >= reconnect_min_delay")
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if self.shared_group is not None and any(c in self.shared_group for c in "/+#"):
            raise ValueError("shared_group must not contain '/', '+' or '#'")
        filters = [sub.filter for sub in self.subscriptions]
        for i, first in enumerate(filters):
            for second in filters[i + 1 :]:
                if filters_overlap(first, second):
                    raise ValueError(
                        f"subscriptions {first!r} and {second!r} overlap: an MQTT 5 broker"
                        " delivers a message matching both twice; make the topics disjoint"
                    )
        return self

    def resolved_password(self) -> str | None:
        """The password, read from ``password_env`` when that is set."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"environment variable {self.password_env} is not set")
            return value
        return self.password.get_secret_value() if self.password is not None else None
