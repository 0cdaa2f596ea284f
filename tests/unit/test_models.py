"""Record serialisation: the orjson fast path writes exactly what pydantic writes; pickling."""

from __future__ import annotations

import pickle
from dataclasses import astuple, fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from schemas import models
from schemas.models import AnomalyScore, LogRecord, Reading, Rollup, adapter, to_json

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(minutes=-90))])
times = st.builds(
    lambda dt, tz: dt.replace(tzinfo=tz),
    st.datetimes(datetime(1970, 1, 2), datetime(2100, 1, 1)),
    offsets,
)
floats = st.floats(allow_nan=True, allow_infinity=True)
values = st.one_of(floats, st.integers(-(2**53), 2**53), st.booleans(), names)

readings = st.builds(
    Reading,
    device=names,
    metric=names,
    ts=times,
    value=values,
    tenant=names,
    quality=st.sampled_from(["good", "bad", "uncertain"]),
    unit=st.none() | names,
    attributes=st.none() | st.dictionaries(names, names, max_size=3),
    score=st.none() | st.floats(0.0, 1.0),
)
scores = st.builds(
    AnomalyScore,
    tenant=names,
    device=names,
    metric=names,
    ts=times,
    value=floats,
    score=st.floats(0.0, 1.0),
    detector=names,
    anomalous=st.booleans(),
)
logs = st.builds(
    LogRecord,
    tenant=names,
    device=names,
    ts=times,
    level=st.sampled_from(["debug", "info", "warning", "error", "critical"]),
    component=names,
    message=names,
    metric=st.none() | names,
)
rollups = st.builds(
    Rollup,
    tenant=names,
    device=names,
    metric=names,
    tier=st.sampled_from(["1m", "5m", "1h"]),
    window_start=times,
    window_end=times,
    count=st.integers(1, 10**9),
    min=floats,
    max=floats,
    sum=floats,
    mean=floats,
    var=floats,
    first=floats,
    last=floats,
    first_ts=times,
    last_ts=times,
    revision=st.integers(0, 1000),
)


@given(st.one_of(readings, scores, rollups, logs))
def test_fast_json_is_byte_identical_to_pydantic(record: Any) -> None:
    assert to_json(record) == adapter(type(record)).dump_json(record)


def test_fast_paths_list_every_field_in_order() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    samples = [
        Reading("d", "m", t, 1.0),
        AnomalyScore("t", "d", "m", t, 1.0, 0.5, "default"),
        Rollup("t", "d", "m", "1m", t, t, 1, 0, 0, 0, 0, 0, 0, 0, t, t),
        LogRecord("t", "d", t, "info", "plc", "started"),
    ]
    assert {type(r) for r in samples} == set(models.FAST_JSON_FIELDS)
    for record in samples:
        as_dict = models.FAST_JSON_FIELDS[type(record)](record)
        assert list(as_dict) == [f.name for f in fields(record)]


def test_values_orjson_refuses_fall_back_to_pydantic() -> None:
    record = Reading("d", "m", datetime(2026, 1, 1, tzinfo=UTC), np.float64(1.5))  # type: ignore[arg-type]
    assert to_json(record) == adapter(Reading).dump_json(record)


@given(readings)
def test_a_reading_survives_pickling_field_for_field(reading: Reading) -> None:
    """Readings cross between processes pickled (``Reading.__reduce__``)."""
    copy = pickle.loads(pickle.dumps(reading))
    assert type(copy) is Reading
    # astuple, not ==: NaN values compare unequal to themselves.
    assert repr(astuple(copy)) == repr(astuple(reading))


def test_reading_reduce_lists_every_field_in_order() -> None:
    """A field added to Reading but not to ``__reduce__`` would be lost between processes."""
    reading = Reading("d", "m", datetime(2026, 1, 1, tzinfo=UTC), 1.0)
    _cls, args = reading.__reduce__()
    assert args == tuple(getattr(reading, f.name) for f in fields(Reading))
