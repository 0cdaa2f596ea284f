"""Structured JSON logs: one JSON object per line on stderr.

>>> log = get_logger("connectors.mqtt.source")
>>> log.name
'streamforge.connectors.mqtt.source'
>>> log.info("connected", extra={"device": "broker", "step": "connect"})  # doctest: +SKIP
{"ts": "...", "level": "info", "component": "streamforge.connectors.mqtt.source",
 "msg": "connected", "device": "broker", "step": "connect"}

Pass context (``device``, ``step``, ``source``, counts) in ``extra``; every
key there becomes a field of the JSON line, as :class:`JsonFormatter` writes it:

>>> record = logging.makeLogRecord({
...     "name": log.name, "levelname": "INFO", "msg": "connected", "created": 1767225600.0,
...     "device": "broker", "step": "connect"})
>>> print(JsonFormatter().format(record))
{"ts": "2026-01-01T00:00:00.000+00:00", "level": "info",
 "component": "streamforge.connectors.mqtt.source", "msg": "connected",
 "device": "broker", "step": "connect"}
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class RepeatFilter(logging.Filter):
    """Lets one line of a given text through per ``interval`` seconds; counts the rest.

    For chatty loggers that repeat themselves while something is down
    (librdkafka logs each failed connection attempt of each client). The
    next line let through carries ``repeated``: how many were held back.

    >>> quiet = RepeatFilter(interval=10.0)
    >>> line = logging.makeLogRecord({"msg": "connect failed"})
    >>> [quiet.filter(line) for _ in range(3)]
    [True, False, False]
    """

    def __init__(self, interval: float = 10.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}  # text -> (when let through, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        now = self._clock()
        with self._lock:
            last = self._last.get(text)
            if last is not None and now - last[0] < self.interval:
                self._last[text] = (last[0], last[1] + 1)
                return False
            if len(self._last) > 1000:
                self._last.clear()
            self._last[text] = (now, 0)
        if last is not None and last[1]:
            record.repeated = last[1]
        return True


_configured = False


def configure_logging(level: str | None = None) -> None:
    """Send StreamForge's logs as JSON lines to stderr (idempotent)."""
    global _configured
    root = logging.getLogger("streamforge")
    root.setLevel((level or os.environ.get("STREAMFORGE_LOG_LEVEL", "INFO")).upper())
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.propagate = False
    _configured = True


def get_logger(component: str) -> logging.Logger:
    """The logger of a component, e.g. ``get_logger("connectors.mqtt.source")``."""
    configure_logging()
    return logging.getLogger(f"streamforge.{component}")
