"""The kinds of output a flow produces."""

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
