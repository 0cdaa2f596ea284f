"""A simulated plant (presses, pumps, HVAC) as a source: the built-in default input.

See ``README.md`` beside this file for every option.
"""

from typing import Any

from connectors.runtime.registry import register_source
from schemas.settings import Settings


@register_source("simulator")
def make_simulator_source(config: Any, settings: Settings) -> Any:
    """The source of a :class:`connectors.simulator.config.SimulatorSourceConfig`."""
    from connectors.simulator.source import SimulatorSource

    return SimulatorSource(config)
