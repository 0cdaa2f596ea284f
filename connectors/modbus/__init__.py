"""Modbus TCP and RTU polling as a source (pymodbus): coalesced reads, any word order.

See ``README.md`` beside this file for every option.
"""

from typing import Any

from connectors.runtime.registry import register_source
from schemas.settings import Settings


@register_source("modbus")
def make_modbus_source(config: Any, settings: Settings) -> Any:
    """The source of a :class:`connectors.modbus.config.ModbusSourceConfig`."""
    from connectors.modbus.source import ModbusSource

    return ModbusSource(config)
