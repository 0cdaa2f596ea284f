"""Durations in configuration: ``"500ms"``, ``"90s"``, ``"5m"``, ``"1h"``, ``"1d"`` or seconds.

>>> parse_duration("5m")
300.0

Its own module, importing nothing of StreamForge, so every config model
(pipeline, sources, sinks) can use it without an import cycle.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as ``"500ms"``, ``"90s"``, ``"5m"``, ``"1h"`` or a number."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration like 500ms, 30s, 5m, 1h or 1d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
