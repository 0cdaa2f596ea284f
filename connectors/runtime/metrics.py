"""Process-wide counters and gauges, rendered in Prometheus text format.

>>> RECEIVED = counter("streamforge_mqtt_messages_received_total", "MQTT messages received")
>>> RECEIVED.inc(source="plant-a")
>>> "streamforge_mqtt_messages_received_total" in render()
True

Deliberately tiny (no client library): counters and gauges with labels are
all the flows need, and reading them in tests is a plain ``value()`` call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

Labels = tuple[tuple[str, str], ...]
_MAX_CACHED_LABEL_SETS = 1000


class Metric:
    """A named family of values, one per label set. Thread-safe."""

    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()
        # labels as passed -> sorted label set: metrics are updated per batch,
        # thousands of times a second at low rates, with a handful of label sets
        self._keys: dict[tuple[tuple[str, object], ...], Labels] = {}

    def _labels(self, labels: dict[str, str]) -> Labels:
        given = tuple(labels.items())
        key = self._keys.get(given)
        if key is None:
            key = tuple(sorted((k, str(v)) for k, v in given))
            if len(self._keys) < _MAX_CACHED_LABEL_SETS:
                self._keys[given] = key
        return key

    def value(self, **labels: str) -> float:
        """Current value for these labels (0 when never touched)."""
        return self._values.get(self._labels(labels), 0.0)

    def total(self) -> float:
        """Sum over all label sets."""
        return sum(self._values.values())

    def samples(self) -> Iterable[tuple[Labels, float]]:
        """(labels, value) pairs, a snapshot."""
        with self._lock:
            return list(self._values.items())


class Counter(Metric):
    """A value that only goes up (messages, errors, overflows)."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0)."""
        key = self._labels(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(Metric):
    """A value that goes up and down (queue depth, buffered rows)."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        """Set the current value."""
        key = self._labels(labels)
        with self._lock:
            self._values[key] = float(value)


_REGISTRY: dict[str, Metric] = {}
_REGISTRY_LOCK = threading.Lock()


def _get(cls: type[Metric], name: str, help_text: str) -> Metric:
    with _REGISTRY_LOCK:
        metric = _REGISTRY.get(name)
        if metric is None:
            metric = cls(name, help_text)
            _REGISTRY[name] = metric
        elif not isinstance(metric, cls):
            raise TypeError(f"metric {name} already registered as {metric.kind}")
        return metric


def counter(name: str, help_text: str) -> Counter:
    """The process-wide counter of this name (created on first use)."""
    metric = _get(Counter, name, help_text)
    assert isinstance(metric, Counter)
    return metric


def gauge(name: str, help_text: str) -> Gauge:
    """The process-wide gauge of this name (created on first use)."""
    metric = _get(Gauge, name, help_text)
    assert isinstance(metric, Gauge)
    return metric


def render() -> str:
    """All metrics in the Prometheus text exposition format."""
    lines: list[str] = []
    for metric in sorted(_REGISTRY.values(), key=lambda m: m.name):
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value in metric.samples():
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(
                f"{metric.name}{{{label_text}}} {value}" if labels else f"{metric.name} {value}"
            )
    return "\n".join(lines) + "\n"
