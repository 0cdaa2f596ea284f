"""The fields of the records a flow emits by the million, as dicts for orjson.

Each function returns a record's fields in declaration order, values as they
are: ``orjson.dumps(reading_fields(r), option=orjson.OPT_UTC_Z)`` writes the
same bytes as pydantic's ``dump_json`` for a :class:`schemas.models.Reading`
(``tests/unit/test_models.py`` checks every field of every type here), much
faster, since nothing is validated or converted on the way.
:func:`schemas.models.to_json` and the Kafka producer use them; setup.py
compiles this module (no Python frame per record).

>>> from datetime import UTC, datetime
>>> from schemas.models import Reading, adapter
>>> r = Reading(device="press-1", metric="temperature", value=71.5,
...             ts=datetime(2026, 1, 1, tzinfo=UTC))
>>> fields = reading_fields(r)
>>> list(fields)[:5], fields["value"]
(['device', 'metric', 'ts', 'value', 'tenant'], 71.5)
>>> import orjson
>>> orjson.dumps(fields, option=orjson.OPT_UTC_Z) == adapter(Reading).dump_json(r)
True
"""

from __future__ import annotations

from typing import Any

# The records are typed ``Any`` here: this module sits below schemas.models (which
# imports it), and an import back, even for type checking only, would be a cycle.
# tests/unit/test_models.py checks every field of every record type against pydantic.


def reading_fields(r: Any) -> dict[str, Any]:
    """A :class:`~schemas.models.Reading`'s fields."""
    return {
        "device": r.device,
        "metric": r.metric,
        "ts": r.ts,
        "value": r.value,
        "tenant": r.tenant,
        "quality": r.quality,
        "source": r.source,
        "unit": r.unit,
        "attributes": r.attributes,
        "score": r.score,
    }


def score_fields(s: Any) -> dict[str, Any]:
    """An :class:`~schemas.models.AnomalyScore`'s fields."""
    return {
        "tenant": s.tenant,
        "device": s.device,
        "metric": s.metric,
        "ts": s.ts,
        "value": s.value,
        "score": s.score,
        "detector": s.detector,
        "anomalous": s.anomalous,
    }


def rollup_fields(r: Any) -> dict[str, Any]:
    """A :class:`~schemas.models.Rollup`'s fields."""
    return {
        "tenant": r.tenant,
        "device": r.device,
        "metric": r.metric,
        "tier": r.tier,
        "window_start": r.window_start,
        "window_end": r.window_end,
        "count": r.count,
        "min": r.min,
        "max": r.max,
        "sum": r.sum,
        "mean": r.mean,
        "var": r.var,
        "first": r.first,
        "last": r.last,
        "first_ts": r.first_ts,
        "last_ts": r.last_ts,
        "revision": r.revision,
    }


def log_fields(g: Any) -> dict[str, Any]:
    """A :class:`~schemas.models.LogRecord`'s fields."""
    return {
        "tenant": g.tenant,
        "device": g.device,
        "ts": g.ts,
        "level": g.level,
        "component": g.component,
        "message": g.message,
        "metric": g.metric,
    }
