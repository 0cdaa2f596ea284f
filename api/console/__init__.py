"""The operator console: a small web app the API serves at ``/``, offline.

``static/`` holds every asset (HTML, one script, one stylesheet, and uPlot
vendored under ``static/vendor/`` with its licence): no CDN, no Node at run
time. :mod:`api.console.live` feeds its live updates from Kafka,
:mod:`api.console.pipeline` reads the flow processes' metrics, and the
routers are :mod:`api.routers.console` and :mod:`api.routers.live`.
See ``api/console/README.md``.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).with_name("static")
"""Where the console's files are (shipped as package data)."""
