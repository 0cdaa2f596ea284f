"""Classify readings as telemetry, events, alarms or logs, and turn logs into log records.

>>> from schemas.config import ClassificationRule
>>> classifier = Classifier([ClassificationRule(metric="log.*", kind="log"),
...                          ClassificationRule(metric="door", device="line-2*", kind="event")])
>>> classifier.resolve("line-2-a", "door"), classifier.resolve("press-1", "temperature")
('event', None)
>>> classifier.kind_of("press-1", "temperature", 71.5)
'telemetry'
>>> classifier.kind_of("press-1", "mode", "AUTO")
'event'

Rules are tried in order and the first whose metric and device globs match
decides (:class:`schemas.config.ClassificationRule`). A series no rule
matches is classified by its value: numbers are telemetry, bools and strings
events. The rule part depends only on (device, metric), so a keyed step can
call :meth:`Classifier.resolve` once per series and keep the answer in the
series' state; :meth:`Classifier.kind_of` adds the value-type fallback.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Any

from schemas.config import ClassificationRule
from schemas.devices import DeviceInfo, DeviceSelector
from schemas.models import LogLevel, LogRecord, Reading, RecordKind, Value, is_number

__all__ = ["Classifier", "kind_by_value", "to_log_record"]

_Matcher = Callable[[str], bool]


def _glob(pattern: str) -> _Matcher:
    """A compiled fnmatchcase: the same semantics, without fnmatch's per-call cache lookup."""
    if pattern == "*":
        return lambda _name: True
    match = re.compile(fnmatch.translate(pattern)).match
    return lambda name: match(name) is not None


def kind_by_value(value: Value) -> RecordKind:
    """The kind of a reading no rule matched: numbers are telemetry, the rest events."""
    return "telemetry" if is_number(value) else "event"


class Classifier:
    """Decides the kind of each series from the classification rules.

    ``resolve`` is pure in (device, metric, and the device's registry entry
    when a rule selects by it); results are cached in a dict bounded by
    ``cache_size`` (cleared when full, so memory stays bounded even with
    unbounded series names). Picklable: the pickle holds the patterns, and
    the compiled globs are rebuilt on unpickling.

    >>> from schemas.devices import DeviceInfo
    >>> pumps = Classifier([ClassificationRule(metric="level", device_type="pump", kind="event")])
    >>> pumps.resolve("p-1", "level", DeviceInfo("default", "p-1", type="pump")), pumps.resolve(
    ...     "p-1", "level")
    ('event', None)
    """

    def __init__(self, rules: Iterable[ClassificationRule], cache_size: int = 100_000) -> None:
        self._patterns: list[tuple[str, str, RecordKind, DeviceSelector | None]] = [
            (
                rule.device,
                rule.metric,
                rule.kind,
                None if rule.is_empty() else rule,  # (a rule is a DeviceSelector)
            )
            for rule in rules
        ]
        self._cache_size = cache_size
        self._compile()

    def _compile(self) -> None:
        self._rules: list[tuple[_Matcher, _Matcher, RecordKind, DeviceSelector | None]] = [
            (_glob(device), _glob(metric), kind, selector)
            for device, metric, kind, selector in self._patterns
        ]
        # With rules selecting by registry entry, the entry is part of the key.
        self._selective = any(selector is not None for *_, selector in self._patterns)
        self._cache: dict[tuple[str, str, DeviceInfo | None], RecordKind | None] = {}

    def resolve(
        self, device: str, metric: str, info: DeviceInfo | None = None
    ) -> RecordKind | None:
        """The kind the first matching rule gives, or None: "decide by the value's type"."""
        key = (device, metric, info if self._selective else None)
        try:
            return self._cache[key]
        except KeyError:
            pass
        kind: RecordKind | None = None
        for device_matches, metric_matches, rule_kind, selector in self._rules:
            if (
                metric_matches(metric)
                and device_matches(device)
                and (selector is None or selector.selects(info))
            ):
                kind = rule_kind
                break
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = kind
        return kind

    def kind_of(self, device: str, metric: str, value: Value) -> RecordKind:
        """The kind of one reading.

        A rule's kind wins, with one exception: a ``telemetry`` rule matching a
        non-numeric value gives ``event``, since telemetry is rolled up and
        scored as numbers (a bool or string would break that).
        """
        kind = self.resolve(device, metric)
        if kind is None or kind == "telemetry":
            # is_number inlined: this runs once per reading.
            return "telemetry" if type(value) is float or type(value) is int else "event"
        return kind

    def __getstate__(self) -> tuple[list[tuple[str, str, RecordKind, DeviceSelector | None]], int]:
        return self._patterns, self._cache_size

    def __setstate__(self, state: tuple[list[Any], int]) -> None:
        patterns, self._cache_size = state
        # (pickles of earlier versions hold (device, metric, kind) triples)
        self._patterns = [(*p, None) if len(p) == 3 else tuple(p) for p in patterns]
        self._compile()


_LEVELS: dict[str, LogLevel] = {
    "debug": "debug",
    "trace": "debug",
    "info": "info",
    "information": "info",
    "notice": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "err": "error",
    "critical": "critical",
    "crit": "critical",
    "fatal": "critical",
    "alert": "critical",
    "emergency": "critical",
}
"""Level names devices use (syslog's among them), mapped to StreamForge's levels."""


def log_level(text: str | None) -> LogLevel:
    """A log level from a device's level name (case-insensitive); ``info`` when unknown."""
    if not text:
        return "info"
    return _LEVELS.get(text.strip().lower(), "info")


def to_log_record(reading: Reading) -> LogRecord:
    """The log record of a reading classified as ``log``.

    ``level`` comes from ``attributes["level"]`` (syslog names and ``warn``
    understood; unknown or absent -> ``info``), ``component`` from
    ``attributes["component"]`` or else the metric, ``message`` is the value
    as text.
    """
    attributes = reading.attributes or {}
    return LogRecord(
        tenant=reading.tenant,
        device=reading.device,
        ts=reading.ts,
        level=log_level(attributes.get("level")),
        component=attributes.get("component") or reading.metric,
        message=str(reading.value),
        metric=reading.metric,
    )
