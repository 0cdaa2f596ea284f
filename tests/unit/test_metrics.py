"""The process-wide counters and gauges (connectors/runtime/metrics.py)."""

from __future__ import annotations

import threading

from connectors.runtime import metrics
from connectors.runtime.metrics import counter, gauge, render


def test_labels_in_any_order_are_one_series() -> None:
    c = counter("test_metrics_order_total", "test")
    c.inc(source="a", topic="t")
    c.inc(2, topic="t", source="a")
    assert c.value(source="a", topic="t") == 3.0
    assert c.value(topic="t", source="a") == 3.0
    assert c.value(source="b", topic="t") == 0.0
    assert len(list(c.samples())) == 1


def test_label_values_are_rendered_as_text() -> None:
    g = gauge("test_metrics_text", "test")
    g.set(5, partition=3)  # type: ignore[arg-type]
    assert g.value(partition="3") == 5.0
    assert 'test_metrics_text{partition="3"} 5.0' in render()


def test_label_set_cache_is_bounded_and_values_stay_right() -> None:
    c = counter("test_metrics_many_total", "test")
    n = metrics._MAX_CACHED_LABEL_SETS + 50
    for i in range(n):
        c.inc(device=f"d{i}")
    c.inc(device="d0")
    c.inc(device=f"d{n - 1}")
    assert len(c._children) == metrics._MAX_CACHED_LABEL_SETS
    assert c.value(device="d0") == 2.0
    assert c.value(device=f"d{n - 1}") == 2.0
    assert c.total() == n + 2


def test_counts_from_threads_all_arrive() -> None:
    c = counter("test_metrics_threads_total", "test")

    def work() -> None:
        for _ in range(2000):
            c.inc(kind="x")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.value(kind="x") == 8000.0


def test_other_label_names_never_raise_and_are_counted() -> None:
    c = counter("test_metrics_mismatch_total", "test")
    c.inc(topic="t")
    c.inc(topic="t", extra="x")  # dropped label
    c.inc()  # missing label: exported empty
    assert c.value(topic="t") == 2.0
    assert c.value(topic="") == 1.0
    assert metrics._MISMATCHES.value(metric="test_metrics_mismatch_total") == 2.0


def test_histograms_render_buckets_and_count() -> None:
    h = metrics.histogram("test_metrics_latency_seconds", "test", buckets=(0.1, 1.0))
    h.observe(0.05, step="decode")
    h.observe(0.5, step="decode")
    text = render()
    assert 'test_metrics_latency_seconds_bucket{le="0.1",step="decode"} 1.0' in text
    assert 'test_metrics_latency_seconds_count{step="decode"} 2.0' in text
    assert h.count(step="decode") == 2.0


def test_counters_render_as_prometheus_counters() -> None:
    c = counter("test_metrics_kind_total", "test")
    c.inc(3)
    text = render()
    assert "# TYPE test_metrics_kind_total counter" in text
    assert "test_metrics_kind_total 3.0" in text
    assert "test_metrics_kind_created" not in text


def test_a_declared_metric_is_listed_before_its_first_update() -> None:
    counter("test_metrics_declared_total", "declared, never counted")
    text = render()
    assert "# TYPE test_metrics_declared_total counter" in text
    assert "\ntest_metrics_declared_total " not in text  # no sample yet: labels unknown
