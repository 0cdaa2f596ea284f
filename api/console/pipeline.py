"""The Pipeline page's figures, read from each flow process's and gateway's ``/metrics``.

>>> text = '''
... streamforge_readings_total{source="plant"} 120.0
... streamforge_decode_dead_letters_total{source="plant"} 3.0
... streamforge_outputs_total{kind="dead_letter"} 4.0
... streamforge_kafka_consumer_lag{partition="raw/0"} 7.0
... streamforge_kafka_consumer_lag{partition="raw/1"} 5.0
... streamforge_timescale_queued_records 40.0
... streamforge_timescale_retries_total{error="OperationalError"} 2.0
... '''
>>> summarize(text)
{'readings': 120.0, 'dead_letters': 4.0, 'kafka_lag': 12.0, 'writer_queued': 40.0, 'errors': 2.0}

Counters are totals: the page divides the change between two polls by the
time between them for "per second". Prometheus (``deploy/prometheus``)
keeps the history; this is the glance an operator needs without it.

An edge gateway (``flows.gateway``) serves its spools' metrics the same way,
one ``spool`` label per spool partition. Its figures add the spools up (the
oldest record is the oldest of any spool) and say what needs a look:

>>> text = '''
... streamforge_spool_bytes{spool="0"} 2048.0
... streamforge_spool_bytes{spool="1"} 1024.0
... streamforge_spool_records{spool="0"} 20.0
... streamforge_spool_records{spool="1"} 10.0
... streamforge_spool_oldest_age_seconds{spool="0"} 75.5
... streamforge_spool_oldest_age_seconds{spool="1"} 3.0
... streamforge_spool_dropped_records_total{reason="full",spool="0"} 5.0
... streamforge_gateway_forwarded_records_total{spool="0"} 900.0
... '''
>>> g = summarize_gateway(text)
>>> g["spool_bytes"], g["spool_records"], g["oldest_age_s"], g["forwarded"], g["spools"]
(3072.0, 30.0, 75.5, 900.0, ['0', '1'])
>>> g["dropped"]
{'full': 5.0, 'age': 0.0, 'corrupt': 0.0}
>>> gateway_warnings(g, max_age_s=60.0)
['5 records dropped (full 5)', 'oldest record 76 s old (over 60 s)']
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# figure -> the samples summed into it
_FIGURES: dict[str, tuple[str, ...]] = {
    "readings": ("streamforge_readings_total",),
    "dead_letters": ("streamforge_outputs_total{kind=dead_letter}",),
    "kafka_lag": ("streamforge_kafka_consumer_lag",),
    "writer_queued": ("streamforge_timescale_queued_records",),
    "errors": (
        "streamforge_timescale_retries_total",
        "streamforge_timescale_lost_total",
        "streamforge_kafka_delivery_errors_total",
        "streamforge_kafka_consumer_errors_total",
    ),
}


def _matches(spec: str, name: str, labels: dict[str, str]) -> bool:
    wanted, _, selector = spec.partition("{")
    if name != wanted:
        return False
    for cond in filter(None, selector.rstrip("}").split(",")):
        key, _, value = cond.partition("=")
        if labels.get(key) != value:
            return False
    return True


def summarize(text: str) -> dict[str, float]:
    """The page's figures from one process's Prometheus text."""
    out = dict.fromkeys(_FIGURES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for figure, specs in _FIGURES.items():
                if any(_matches(s, sample.name, sample.labels) for s in specs):
                    out[figure] += sample.value
    return out


# gateway figure -> the samples summed into it (every spool's)
_GATEWAY_SUMS: dict[str, str] = {
    "spool_bytes": "streamforge_spool_bytes",
    "spool_records": "streamforge_spool_records",
    "appended": "streamforge_spool_appended_records_total",
    "forwarded": "streamforge_gateway_forwarded_records_total",
    "forward_failures": "streamforge_gateway_forward_failures_total",
    "blocked_s": "streamforge_spool_blocked_seconds_total",
}
_DROP_REASONS = ("full", "age", "corrupt")
"""The spool's drop reasons (connectors/runtime/spool.py), always reported, 0 or not."""


def summarize_gateway(text: str) -> dict[str, Any]:
    """A gateway's spool figures from its Prometheus text, summed over its spools.

    ``oldest_age_s`` is the oldest of any spool's oldest record; ``dropped``
    is by reason (``dropped_total`` their sum); ``spools`` the spool labels
    seen (none: the target is not a gateway, or its spools are not open yet).
    """
    out: dict[str, Any] = dict.fromkeys(_GATEWAY_SUMS, 0.0)
    dropped = dict.fromkeys(_DROP_REASONS, 0.0)
    oldest = 0.0
    spools: set[str] = set()
    sums = {name: figure for figure, name in _GATEWAY_SUMS.items()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name in sums:
                out[sums[name]] += sample.value
                if name == "streamforge_spool_records":
                    spools.add(labels.get("spool", ""))
            elif name == "streamforge_spool_oldest_age_seconds":
                oldest = max(oldest, sample.value)
            elif name == "streamforge_spool_dropped_records_total":
                reason = labels.get("reason", "")
                dropped[reason] = dropped.get(reason, 0.0) + sample.value
    out["oldest_age_s"] = oldest
    out["dropped"] = dropped
    out["dropped_total"] = sum(dropped.values())
    out["spools"] = sorted(spools)
    return out


def gateway_warnings(figures: dict[str, Any], max_age_s: float) -> list[str]:
    """What an operator should look at: records dropped, a record waiting too long, no spool."""
    warnings = []
    if figures["dropped_total"] > 0:
        by_reason = ", ".join(f"{r} {v:.0f}" for r, v in figures["dropped"].items() if v > 0)
        warnings.append(f"{figures['dropped_total']:.0f} records dropped ({by_reason})")
    if figures["oldest_age_s"] > max_age_s:
        warnings.append(
            f"oldest record {figures['oldest_age_s']:.0f} s old (over {max_age_s:.0f} s)"
        )
    if not figures["spools"]:
        warnings.append("no spool metrics: not a gateway, or its spools are not open yet")
    return warnings


def gateway_figures(text: str, max_age_s: float) -> dict[str, Any]:
    """:func:`summarize_gateway`, its :func:`gateway_warnings` and the age limit they used."""
    figures = summarize_gateway(text)
    return {**figures, "max_age_s": max_age_s, "warnings": gateway_warnings(figures, max_age_s)}


async def scrape(
    targets: list[str],
    timeout: float = 2.0,
    figures: Callable[[str], dict[str, Any]] = summarize,
) -> list[dict[str, Any]]:
    """Each target's ``figures`` (of its ``/metrics`` text), or ``up: false`` and the error."""

    def one(target: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://{target}/metrics", timeout=timeout) as r:
                text = r.read().decode()
            return {"target": target, "up": True, **figures(text)}
        except (OSError, ValueError) as exc:  # URLError, refused, timeout, bad text
            return {"target": target, "up": False, "error": f"{type(exc).__name__}: {exc}"[:200]}

    return list(await asyncio.gather(*(asyncio.to_thread(one, t) for t in targets)))
