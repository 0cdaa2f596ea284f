"""Process-wide counters, gauges and histograms, kept by ``prometheus_client``.

>>> RECEIVED = counter("streamforge_mqtt_messages_received_total", "MQTT messages received")
>>> RECEIVED.inc(source="plant-a")
>>> RECEIVED.value(source="plant-a") >= 1
True
>>> "streamforge_mqtt_messages_received_total{" in render()
True
>>> WRITE = histogram("streamforge_doc_write_seconds", "A batch write", buckets=(0.01, 0.1))
>>> WRITE.observe(0.05, table="readings")
>>> 'streamforge_doc_write_seconds_bucket{le="0.1",table="readings"} 1.0' in render()
True

The call sites declare a metric by name and help only, and pass labels as
keywords where they count (``inc(2, topic=t)``). ``prometheus_client`` wants
the label names up front, so each facade creates its family on first use,
with the label names of that first call. A later call with other names
never raises (an exception in a step would abort the whole dataflow): a
label it lacks is exported empty, an extra one is dropped, and both are
counted in ``streamforge_metric_label_mismatches_total`` and logged once.

The metrics live in ``prometheus_client``'s default registry, beside its
process and GC collectors; :func:`render` is what ``/metrics`` serves, in
the API and in every flow process (:mod:`connectors.runtime.metrics_server`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import prometheus_client
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.core import (
    Metric as MetricFamily,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from connectors.runtime.logs import get_logger

# ``*_created`` timestamps double the series count and nobody graphs them.
prometheus_client.disable_created_metrics()

log = get_logger("connectors.runtime.metrics")

Labels = tuple[tuple[str, str], ...]
_MAX_CACHED_LABEL_SETS = 1000
DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Latency buckets in seconds: a step's batch (sub-millisecond) up to a stalled write."""


class Metric:
    """A named family of values, one per label set. Thread-safe."""

    kind = "untyped"
    _family_class: type[MetricWrapperBase]

    def __init__(self, name: str, help_text: str, **options: Any) -> None:
        self.name = name
        self.help = help_text
        self._options = options
        self._family: MetricWrapperBase | None = None
        self._labelnames: tuple[str, ...] = ()
        self._lock = threading.Lock()
        # labels as passed -> child: metrics are updated per batch, thousands
        # of times a second, with a handful of label sets; prometheus_client's
        # own ``labels()`` validates and sorts on every call
        self._children: dict[tuple[tuple[str, object], ...], Any] = {}

    def _create(self, labelnames: tuple[str, ...]) -> MetricWrapperBase:
        with self._lock:
            if self._family is None:
                self._labelnames = labelnames
                self._family = self._family_class(
                    self.name, self.help, labelnames=labelnames, **self._options
                )
            return self._family

    def _child(self, labels: dict[str, Any]) -> Any:
        given = tuple(labels.items())
        child = self._children.get(given)
        if child is not None:
            return child
        family = self._family or self._create(tuple(sorted(labels)))
        if not self._labelnames:
            child = family
        else:
            if set(labels) != set(self._labelnames):
                _mismatch(self.name, self._labelnames, tuple(labels))
            child = family.labels(*(str(labels.get(n, "")) for n in self._labelnames))
        if len(self._children) < _MAX_CACHED_LABEL_SETS:
            self._children[given] = child
        return child

    def _peek(self, labels: dict[str, Any]) -> Any:
        """The child of these labels if it exists: reading must not export a new series."""
        child = self._children.get(tuple(labels.items()))
        if child is not None or self._family is None:
            return child
        if not self._labelnames:
            return self._family
        key = tuple(str(labels.get(n, "")) for n in self._labelnames)
        return self._family._metrics.get(key)  # prometheus_client's children by label values

    def _read(self, labels: dict[str, Any]) -> float:
        child = self._peek(labels)
        # ``_value`` is prometheus_client's per-child store; the public way
        # (``REGISTRY.get_sample_value``) collects every metric of the process.
        return 0.0 if child is None else float(child._value.get())

    def samples(self) -> Iterable[tuple[Labels, float]]:
        """(labels, value) pairs of the main sample (``_total`` of a counter), a snapshot."""
        if self._family is None:
            return []
        wanted = {self.name, f"{self.name}_total", f"{self.name}_sum"}
        return [
            (tuple(sorted(s.labels.items())), s.value)
            for family in self._family.collect()
            for s in family.samples
            if s.name in wanted and s.name != f"{self.name}_created"
        ]

    def total(self) -> float:
        """Sum over all label sets."""
        return sum(value for _labels, value in self.samples())


class Counter(Metric):
    """A value that only goes up (messages, errors, overflows)."""

    kind = "counter"
    _family_class = prometheus_client.Counter

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0)."""
        self._child(labels).inc(amount)

    def value(self, **labels: str) -> float:
        """Current value for these labels (0 when never touched)."""
        return self._read(labels)


class Gauge(Metric):
    """A value that goes up and down (queue depth, buffered rows)."""

    kind = "gauge"
    _family_class = prometheus_client.Gauge

    def set(self, value: float, **labels: str) -> None:
        """Set the current value."""
        self._child(labels).set(float(value))

    def value(self, **labels: str) -> float:
        """Current value for these labels (0 when never touched)."""
        return self._read(labels)


class Histogram(Metric):
    """Observed durations or sizes, in buckets (latencies of steps and writes)."""

    kind = "histogram"
    _family_class = prometheus_client.Histogram

    def observe(self, value: float, **labels: str) -> None:
        """Count one observation."""
        self._child(labels).observe(value)

    def count(self, **labels: str) -> float:
        """How many observations these labels have (0 when never touched).

        >>> h = histogram("streamforge_doc_count_seconds", "doc")
        >>> h.observe(0.2, step="a"); h.observe(0.4, step="a")
        >>> h.count(step="a"), h.count(step="b")
        (2.0, 0.0)
        """
        child = self._peek(labels)
        return 0.0 if child is None else float(sum(b.get() for b in child._buckets))


_REGISTRY: dict[str, Metric] = {}
_REGISTRY_LOCK = threading.Lock()


def _get(cls: type[Metric], name: str, help_text: str, **options: Any) -> Metric:
    with _REGISTRY_LOCK:
        metric = _REGISTRY.get(name)
        if metric is None:
            metric = cls(name, help_text, **options)
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


def histogram(name: str, help_text: str, buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
    """The process-wide histogram of this name (created on first use)."""
    metric = _get(Histogram, name, help_text, buckets=tuple(buckets))
    assert isinstance(metric, Histogram)
    return metric


_MISMATCHES = counter(
    "streamforge_metric_label_mismatches_total",
    "Metric updates whose label names differ from the metric's first update (a code bug)",
)
_reported: set[str] = set()


def _mismatch(name: str, expected: tuple[str, ...], given: tuple[str, ...]) -> None:
    _MISMATCHES.inc(metric=name)
    if name not in _reported:
        _reported.add(name)
        log.warning(
            "metric updated with other label names than its first update",
            extra={"metric": name, "expected": list(expected), "given": list(given)},
        )


class _Declared(Collector):
    """HELP and TYPE of the metrics declared but not yet updated (so no family yet).

    A dashboard or a test can then find every metric by name from the start,
    as ``up`` would be: "0 dead letters" and "no such metric" are not the same.
    """

    _families = {
        "counter": CounterMetricFamily,
        "gauge": GaugeMetricFamily,
        "histogram": HistogramMetricFamily,
    }

    def describe(self) -> list[MetricFamily]:
        # Nothing: the names are registered by their real families later on.
        return []

    def collect(self) -> list[MetricFamily]:
        with _REGISTRY_LOCK:
            waiting = [m for m in _REGISTRY.values() if m._family is None]
        return [self._families[m.kind](m.name, m.help) for m in waiting]


REGISTRY.register(_Declared())


def render() -> str:
    """All metrics of this process in the Prometheus text exposition format."""
    return generate_latest(REGISTRY).decode()
