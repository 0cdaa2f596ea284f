"""TimescaleDB (or plain PostgreSQL) as a sink: binary COPY, idempotent upserts, retention.

See ``README.md`` beside this file for every option; ``python -m
connectors.timescale.migrate`` applies the schema.
"""

from typing import Any

from connectors.runtime.registry import register_sink
from schemas.settings import Settings


@register_sink("timescale")
def make_timescale_sink(config: Any, settings: Settings) -> Any:
    """The sink of a :class:`connectors.timescale.config.TimescaleSinkConfig`."""
    from connectors.timescale.sink import TimescaleSink

    return TimescaleSink(config, settings)
