"""Kafka: raw readings as a source, every output kind as a sink (a topic per kind).

Also here: the operators' alarm actions source and the alarm follower
(``python -m connectors.kafka.alerts``). See ``README.md`` beside this file.
"""

from typing import Any

from connectors.runtime.registry import register_sink, register_source
from schemas.settings import Settings


@register_source("kafka")
def make_kafka_source(config: Any, settings: Settings) -> Any:
    """The source of a :class:`connectors.kafka.source_config.KafkaSourceConfig`."""
    from connectors.kafka.source import KafkaRawSource

    return KafkaRawSource(config, settings)


@register_sink("kafka")
def make_kafka_sink(config: Any, settings: Settings) -> Any:
    """The sink of a :class:`connectors.kafka.sink_config.KafkaSinkConfig`."""
    from connectors.kafka.sink import make_kafka_sink

    return make_kafka_sink(config, settings)
