"""Configuration of the Modbus source (filled in by the Modbus connector work)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class ModbusSourceConfig(BaseModel):
    """Modbus devices and their register maps. See ``connectors/modbus.py``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"] = "modbus"
    name: str = "modbus"
