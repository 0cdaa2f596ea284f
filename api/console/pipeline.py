"""The Pipeline page's figures, read from each flow process's ``/metrics``.

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
"""

from __future__ import annotations

import asyncio
import urllib.request
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


async def scrape(targets: list[str], timeout: float = 2.0) -> list[dict[str, Any]]:
    """Each target's figures, or ``up: false`` and the error."""

    def one(target: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://{target}/metrics", timeout=timeout) as r:
                text = r.read().decode()
            return {"target": target, "up": True, **summarize(text)}
        except (OSError, ValueError) as exc:  # URLError, refused, timeout, bad text
            return {"target": target, "up": False, "error": f"{type(exc).__name__}: {exc}"[:200]}

    return list(await asyncio.gather(*(asyncio.to_thread(one, t) for t in targets)))
