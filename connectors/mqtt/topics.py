"""Route an MQTT topic to its subscription: payload format and fields from topic levels.

>>> from connectors.mqtt.config import MqttSubscription
>>> router = TopicRouter([
...     MqttSubscription(topic="plant/{site}/{device}/{metric}", format="number",
...                      defaults={"unit": "degC"}),
...     MqttSubscription(topic="batch/{device}/#", format="array"),
... ])
>>> router.route("plant/north/press-1/temperature")
('number', {'unit': 'degC', 'site': 'north', 'device': 'press-1', 'metric': 'temperature'})
>>> router.route("batch/press-2/a/b")
('array', {'device': 'press-2'})
>>> router.route("elsewhere") is None
True

Subscriptions are tried in the order they are configured and the first one
whose template matches wins (the config rejects overlapping templates, since
an MQTT 5 broker delivers a message once per matching subscription, so at
most one can match). Routes are cached per topic: plants reuse the same
topics over and over, and a dictionary lookup is cheaper than splitting and
matching each time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from connectors.mqtt.config import MqttSubscription, parse_topic_template

PayloadFormat = Literal["auto", "object", "array", "number"]
Route = tuple[PayloadFormat, dict[str, str]]

_CACHE_LIMIT = 100_000
"""Distinct topics remembered; past this the cache starts over (bounded memory)."""


class _Template:
    """One compiled subscription: per level a literal, ``+``, ``#`` or a field name."""

    __slots__ = ("defaults", "fmt", "levels", "multi")

    def __init__(self, sub: MqttSubscription) -> None:
        parsed = parse_topic_template(sub.topic)
        fields = iter(sub.fields)
        # (is_field, text): text is the field name for fields, else the literal/wildcard.
        self.levels: list[tuple[bool, str]] = [
            (True, next(fields)) if level is None else (False, level) for level in parsed
        ]
        self.multi = bool(self.levels) and self.levels[-1] == (False, "#")
        if self.multi:
            self.levels.pop()
        self.fmt: PayloadFormat = sub.format
        self.defaults = dict(sub.defaults)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        """The fields of a topic (split on ``/``) if it matches, else None."""
        if len(parts) < len(self.levels) or (not self.multi and len(parts) != len(self.levels)):
            return None
        values = dict(self.defaults)
        for (is_field, text), part in zip(self.levels, parts, strict=False):
            if is_field:
                values[text] = part
            elif text != "+" and text != part:
                return None
        return values


class TopicRouter:
    """Finds the subscription a received topic belongs to (first match in config order)."""

    def __init__(self, subscriptions: Sequence[MqttSubscription]) -> None:
        self._templates = [_Template(sub) for sub in subscriptions]
        self._cache: dict[str, Route | None] = {}

    def route(self, topic: str) -> Route | None:
        """(payload format, defaults incl. topic fields), or None when no template matches.

        The defaults dict is shared by every message of the topic: read it,
        do not modify it.
        """
        cached = self._cache.get(topic, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        route: Route | None = None
        parts = topic.split("/")
        for template in self._templates:
            values = template.match(parts)
            if values is not None:
                route = (template.fmt, values)
                break
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = route
        return route
