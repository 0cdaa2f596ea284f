"""MQTT 3.1.1/5 subscriptions as a source (paho-mqtt), QoS 1 acknowledged after the snapshot.

See ``README.md`` beside this file for every option.
"""

from typing import Any

from connectors.runtime.registry import register_source
from schemas.settings import Settings


@register_source("mqtt")
def make_mqtt_source(config: Any, settings: Settings) -> Any:
    """The source of a :class:`connectors.mqtt.config.MqttSourceConfig`."""
    from connectors.mqtt.source import MqttSource

    return MqttSource(config, settings)
