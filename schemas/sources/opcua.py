"""Configuration of the OPC UA source (filled in by the OPC UA connector work)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class OpcuaSourceConfig(BaseModel):
    """OPC UA endpoints and their monitored nodes. See ``connectors/opcua.py``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["opcua"] = "opcua"
    name: str = "opcua"
