"""Configuration of the OPC UA source: endpoints, their security and their nodes.

>>> cfg = OpcuaSourceConfig.model_validate({
...     "endpoints": [{
...         "name": "press-line", "url": "opc.tcp://10.0.0.5:4840",
...         "nodes": [{"node_id": "ns=2;s=Line1.Temperature", "device": "press-1",
...                    "metric": "temperature", "unit": "degC"}],
...     }],
... })
>>> cfg.endpoints[0].publishing_interval_ms
1000.0

One endpoint is one server connection, one session, one subscription (or one
polling loop) and one Bytewax partition keyed by the endpoint's ``name``.
Every option is documented in ``connectors/opcua/sample.yaml``; the connector
is ``connectors/opcua/source.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Name = Annotated[str, Field(min_length=1, max_length=200)]

DeadbandType = Literal["none", "absolute", "percent"]
"""``absolute``: report a change only when |new - last reported| exceeds the value
(engineering units). ``percent``: the value is a percentage (0-100) of the
variable's EURange (the server needs an EURange property). Numeric variables only."""


class OpcuaNodeConfig(BaseModel):
    """One variable to read: where it is on the server, and which series it feeds.

    Give exactly one of ``node_id`` (``ns=2;i=1001``, ``ns=2;s=Line1.Temp``,
    or ``nsu=<namespace URI>;s=...`` which survives namespace index changes)
    or ``browse_path`` (qualified browse names from the Objects folder, e.g.
    ``2:Plant/2:Line1/2:Temperature``, exactly as ``python -m connectors.opcua
    browse`` prints it). Browse paths are resolved again on every reconnect,
    so a server that renumbers its nodes on restart still works.
    ``sampling_interval_ms``, ``queue_size`` and ``deadband_*`` override the
    endpoint's defaults for this node (subscription mode only).
    """

    model_config = ConfigDict(extra="forbid")

    node_id: str | None = None
    browse_path: str | None = None
    device: Name
    metric: Name
    unit: str | None = None
    sampling_interval_ms: float | None = Field(None, ge=-1)
    queue_size: int | None = Field(None, ge=1, le=10_000)
    deadband_type: DeadbandType | None = None
    deadband_value: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_address(self) -> OpcuaNodeConfig:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node_id or browse_path")
        if self.deadband_type == "percent" and (self.deadband_value or 0) > 100:
            raise ValueError("a percent deadband is between 0 and 100")
        return self

    @property
    def address(self) -> str:
        """The node's address as configured (node id or browse path), for logs."""
        return self.node_id or f"browse:{self.browse_path}"


class OpcuaEndpointConfig(BaseModel):
    """One OPC UA server endpoint: connection, security, reading mode and nodes.

    ``mode="subscription"`` creates one subscription with a monitored item per
    node (the server pushes changes every ``publishing_interval_ms``);
    ``mode="polling"`` reads every node each ``poll_interval_ms`` instead
    (for servers with broken subscriptions; deadband and queue size do not
    apply). ``sampling_interval_ms`` ``-1`` means "the publishing interval",
    ``0`` the server's fastest. ``queue_size`` is the server-side queue per
    monitored item (1 = only the latest value between two publishes).
    """

    model_config = ConfigDict(extra="forbid")

    name: Name
    url: str = Field(pattern=r"^opc\.tcp://")
    tenant: Name | None = None
    mode: Literal["subscription", "polling"] = "subscription"
    publishing_interval_ms: float = Field(1000.0, gt=0)
    sampling_interval_ms: float = Field(-1.0, ge=-1)
    queue_size: int = Field(10, ge=1, le=10_000)
    deadband_type: DeadbandType = "none"
    deadband_value: float = Field(0.0, ge=0)
    poll_interval_ms: float = Field(1000.0, gt=0)
    keepalive_s: float = Field(
        5.0, gt=0, description="server keep-alive period when nothing changes"
    )
    subscription_lifetime_s: float = Field(
        300.0,
        gt=0,
        description="server drops the subscription after this long without a publish request",
    )

    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = None
    private_key: Path | None = None
    private_key_password: SecretStr | None = None
    server_certificate: Path | None = None
    application_uri: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None

    request_timeout_s: float = Field(4.0, gt=0)
    watchdog_interval_s: float = Field(1.0, gt=0)
    open_timeout_s: float = Field(15.0, gt=0)
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    buffer_size: int = Field(100_000, ge=1)
    nodes: list[OpcuaNodeConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent_security(self) -> OpcuaEndpointConfig:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy None goes with security_mode None; Basic256Sha256 needs "
                "security_mode Sign or SignAndEncrypt"
            )
        if self.security_policy != "None" and (
            self.certificate is None or self.private_key is None
        ):
            raise ValueError(
                "Basic256Sha256 needs certificate and private_key "
                "(create them with: python -m connectors.opcua gen-cert --out DIR)"
            )
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and not self.username:
            raise ValueError("a password needs a username")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self

    def resolved_password(self) -> str | None:
        """The password from ``password`` or from the environment variable ``password_env``."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(
                    f"environment variable {self.password_env} (password_env) is not set"
                )
            return value
        return None


class OpcuaSourceConfig(BaseModel):
    """OPC UA endpoints and their monitored nodes. See ``connectors/opcua/source.py``.

    ``tenant`` applies to every endpoint that does not set its own.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["opcua"] = "opcua"
    name: str = "opcua"
    tenant: Name = "default"
    endpoints: list[OpcuaEndpointConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_endpoint_names(self) -> OpcuaSourceConfig:
        names = [e.name for e in self.endpoints]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"endpoint names must be unique (they are partition keys): {duplicates}"
            )
        return self
