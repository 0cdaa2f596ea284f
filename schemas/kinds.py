"""The kinds of output a flow produces: the names sinks and configs use to pick streams.

A sink config's ``kinds`` lists some of them; every record a flow emits is
tagged with one:

>>> ALL_OUTPUT_KINDS[:3], len(ALL_OUTPUT_KINDS)
(('telemetry', 'event', 'alarm'), 7)
>>> from typing import get_args
>>> set(get_args(OutputKind)) == set(ALL_OUTPUT_KINDS)
True
"""

from __future__ import annotations

from typing import Literal

OutputKind = Literal["telemetry", "event", "alarm", "log", "rollup", "anomaly_score", "dead_letter"]
"""The streams a flow produces; every sink receives some or all of them."""

ALL_OUTPUT_KINDS: tuple[OutputKind, ...] = (
    "telemetry",
    "event",
    "alarm",
    "log",
    "rollup",
    "anomaly_score",
    "dead_letter",
)
