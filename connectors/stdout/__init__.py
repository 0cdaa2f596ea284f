"""Local sinks: readable lines on standard output (``stdout``) and a discarding ``null`` sink."""

from typing import Any

from connectors.runtime.registry import register_sink
from schemas.settings import Settings


@register_sink("stdout")
def make_stdout_sink(config: Any, settings: Settings) -> Any:
    """The sink of a :class:`connectors.stdout.config.StdoutSinkConfig`."""
    from connectors.stdout.sink import StdoutSink

    return StdoutSink(config.format)


@register_sink("null")
def make_null_sink(config: Any, settings: Settings) -> Any:
    """The sink of a :class:`connectors.stdout.config.NullSinkConfig`."""
    from connectors.stdout.sink import NullSink

    return NullSink()
