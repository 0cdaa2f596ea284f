"""OPC UA subscriptions as a source (asyncua), re-created after a server restart.

See ``README.md`` beside this file for every option; ``python -m
connectors.opcua`` browses a server's address space.
"""

from typing import Any

from connectors.runtime.registry import register_source
from schemas.settings import Settings


@register_source("opcua")
def make_opcua_source(config: Any, settings: Settings) -> Any:
    """The source of a :class:`connectors.opcua.config.OpcuaSourceConfig`."""
    from connectors.opcua.source import OpcuaSource

    return OpcuaSource(config)
