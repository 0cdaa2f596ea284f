"""Which connector builds the source or sink for a config ``type``: a registry the connectors fill.

The flow's wiring picks a connector by the ``type`` of its config without
importing connector modules by name: each connector package registers a
factory when it is imported, and importing a connector's config model
imports its package. So whoever holds a config object can build its source
or sink, and a flow that reads the simulator never loads asyncua or
pymodbus (the factories import their connector's modules when called).

>>> from dataclasses import dataclass
>>> @dataclass
... class EchoConfig:
...     type: str = "echo"
>>> @register_source("echo")
... def make_echo(config, settings):
...     return f"an echo source for {config.type}"
>>> build_source(EchoConfig())
'an echo source for echo'
>>> build_sink(EchoConfig())
Traceback (most recent call last):
    ...
ValueError: no sink connector for type 'echo' (known: ...)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from schemas.settings import Settings

Factory = Callable[[Any, Settings], Any]
"""Builds a Bytewax source or sink from its config and the process settings."""

F = TypeVar("F", bound=Factory)

_SOURCES: dict[str, Factory] = {}
_SINKS: dict[str, Factory] = {}


def _register(table: dict[str, Factory], type_name: str) -> Callable[[F], F]:
    def decorate(factory: F) -> F:
        known = table.get(type_name)
        if known is not None and known is not factory:
            raise ValueError(f"connector type {type_name!r} registered twice")
        table[type_name] = factory
        return factory

    return decorate


def register_source(type_name: str) -> Callable[[F], F]:
    """Decorator: ``factory(config, settings)`` builds the source of configs of this type."""
    return _register(_SOURCES, type_name)


def register_sink(type_name: str) -> Callable[[F], F]:
    """Decorator: ``factory(config, settings)`` builds the sink of configs of this type."""
    return _register(_SINKS, type_name)


def _build(table: dict[str, Factory], what: str, config: Any, settings: Settings | None) -> Any:
    factory = table.get(config.type)
    if factory is None:
        known = ", ".join(sorted(table)) or "none"
        raise ValueError(f"no {what} connector for type {config.type!r} (known: {known})")
    return factory(config, settings or Settings())


def build_source(config: Any, settings: Settings | None = None) -> Any:
    """The Bytewax source for one source config (it emits ``Reading`` or ``RawMessage``)."""
    return _build(_SOURCES, "source", config, settings)


def build_sink(config: Any, settings: Settings | None = None) -> Any:
    """The Bytewax sink of ``(kind, records)`` outputs for one sink config."""
    return _build(_SINKS, "sink", config, settings)
