"""The console's settings, from ``STREAMFORGE_CONSOLE_*`` environment variables.

>>> s = ConsoleSettings()
>>> s.telemetry_topic, s.online_s, s.offline_s
('streamforge.telemetry', 60.0, 900.0)
>>> ConsoleSettings(metrics_targets="127.0.0.1:9400, 127.0.0.1:9401").targets()
['127.0.0.1:9400', '127.0.0.1:9401']
>>> ConsoleSettings().gateways(), ConsoleSettings(gateway_targets="").gateways()
(['127.0.0.1:9410'], [])
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """What the console reads besides the API's own settings."""

    model_config = SettingsConfigDict(env_prefix="STREAMFORGE_CONSOLE_", extra="ignore")

    telemetry_topic: str = Field(
        "streamforge.telemetry",
        description="Kafka topic of telemetry (the Kafka sink's) for the live latest values; "
        "empty: no live values (the Plant page then refreshes from the database).",
    )
    online_s: float = Field(
        60.0, gt=0, description="A device is online while its newest reading is this recent."
    )
    offline_s: float = Field(900.0, gt=0, description="... stale until this age, offline after it.")
    tick_s: float = Field(
        1.0, gt=0, le=10, description="Live latest values are sent at most this often."
    )
    metrics_targets: str = Field(
        "127.0.0.1:9400,127.0.0.1:9401",
        description="host:port of each flow process's metrics server (Pipeline page), "
        "comma-separated.",
    )
    gateway_targets: str = Field(
        "127.0.0.1:9410",
        description="host:port of each edge gateway's metrics server (flows.gateway, its "
        "STREAMFORGE_METRICS_PORT; make demo: 9410), comma-separated; empty: no gateways "
        "on the Pipeline page.",
    )
    gateway_max_age_s: float = Field(
        60.0,
        gt=0,
        description="The Pipeline page warns when a gateway's oldest spooled record, not yet "
        "forwarded to Kafka, is older than this.",
    )

    def targets(self) -> list[str]:
        """The metrics targets as a list."""
        return _split(self.metrics_targets)

    def gateways(self) -> list[str]:
        """The gateways' metrics targets as a list."""
        return _split(self.gateway_targets)


def _split(targets: str) -> list[str]:
    return [t.strip() for t in targets.split(",") if t.strip()]
