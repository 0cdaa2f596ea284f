"""Configuration of the MQTT source (filled in by the MQTT connector work)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class MqttSourceConfig(BaseModel):
    """An MQTT broker subscription set. See ``connectors/mqtt.py``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mqtt"] = "mqtt"
    name: str = "mqtt"
    url: str | None = None
