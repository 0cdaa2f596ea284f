"""Connection settings, read from ``STREAMFORGE_*`` environment variables.

Defaults match the local services started by ``make up`` (see
``deploy/services.sh``), so nothing needs configuring on a development box.

>>> Settings.model_fields["kafka_bootstrap_servers"].default
'127.0.0.1:9092'
>>> Settings(log_level="DEBUG").log_level       # an argument wins over the environment
'DEBUG'
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the servers are and where the pipeline config lives.

    Every field is read from the environment variable ``STREAMFORGE_`` +
    the field name in upper case, e.g. ``STREAMFORGE_DATABASE_URL``.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMFORGE_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    database_url: str = Field(
        "postgresql://streamforge:streamforge@127.0.0.1:5433/streamforge",
        description="PostgreSQL / TimescaleDB connection URL (libpq syntax).",
    )
    mqtt_url: str = Field(
        "mqtt://127.0.0.1:1883", description="Default MQTT broker URL (mqtt:// or mqtts://)."
    )
    config: Path | None = Field(
        None, description="Path of the YAML pipeline config; unset = built-in default."
    )
    log_level: str = Field("INFO", description="Log level of StreamForge's JSON logs.")
    api_url: str = Field("http://127.0.0.1:8000", description="Where the REST API listens.")
    metrics_port: str = Field(
        "9400",
        description="Port of a flow process's /metrics and /health, plus its process id (-i); "
        "off: none (connectors/runtime/metrics_server.py).",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the flow's metrics server listens on (0.0.0.0 in Docker)."
    )
