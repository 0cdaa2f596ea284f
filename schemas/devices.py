"""The device registry: what a plant says about its devices, and the flow's view of it.

Devices are registered through the API (one at a time, or in bulk from CSV
or YAML) into the ``devices`` table (``schemas/sql/010_device_registry.sql``)
with their metadata; a tenant's policy (``device_policies``) says whether
readings of devices nobody registered are accepted (and listed as
*discovered*) or rejected. A flow keeps a :class:`DeviceRegistry` in memory,
filled from the table (``connectors/timescale/devices.py``), and asks it
whether a device's readings are admitted and what type, area and tags it
has, which rules can select on (:class:`DeviceSelector`).

>>> registry = DeviceRegistry()
>>> registry.replace([DeviceInfo("default", "press-1", type="press", area="north",
...                              tags=frozenset({"line-1"}))], {"default": "reject"})
>>> registry.admits("default", "press-1"), registry.admits("default", "pump-9")
(None, "device 'pump-9' is not registered (tenant 'default' rejects unregistered devices)")
>>> press = registry.lookup("default", "press-1")
>>> DeviceSelector(device_type="press", tags=["line-1"]).selects(press)
True
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

UnregisteredPolicy = Literal["accept", "reject"]
"""What a flow does with readings of a device nobody registered."""

DeviceStatus = Literal["active", "decommissioned"]
"""A registered device's life: active until it is decommissioned (re-registering revives it)."""

_NAME = r"^[^\x00/]+$"  # stored in PostgreSQL (no NUL) and keyed tenant/device (no slash)


class MetricSpec(BaseModel):
    """A metric a device is expected to send: its unit and normal range (all optional)."""

    model_config = ConfigDict(extra="forbid")

    unit: str | None = Field(None, max_length=50, pattern=r"^[^\x00]*$")
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _range(self) -> MetricSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class DeviceRegistration(BaseModel):
    """One device as it is registered: its id (as readings name it) and its metadata.

    >>> DeviceRegistration(device="press-1", type="press", tags=["line-1", "line-1"]).tags
    ['line-1']
    """

    model_config = ConfigDict(extra="forbid")

    device: str = Field(min_length=1, max_length=200, pattern=_NAME)
    name: str | None = Field(
        None, max_length=200, pattern=r"^[^\x00]*$", description="display name"
    )
    type: str | None = Field(None, max_length=100, pattern=r"^[^\x00]*$")
    area: str | None = Field(None, max_length=100, pattern=r"^[^\x00]*$")
    tags: list[str] = Field(default_factory=list, max_length=50)
    metrics: dict[str, MetricSpec] = Field(default_factory=dict, max_length=500)

    @model_validator(mode="after")
    def _tags(self) -> DeviceRegistration:
        for tag in self.tags:
            if not tag or len(tag) > 100 or "\x00" in tag:
                raise ValueError(f"tag {tag!r} must be 1 to 100 characters, without NUL")
        self.tags = sorted(set(self.tags))
        return self


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a flow knows of a registered device (a row of ``devices``)."""

    tenant: str
    device: str
    type: str | None = None
    area: str | None = None
    tags: frozenset[str] = field(default_factory=frozenset)
    status: DeviceStatus = "active"
    revision: int = 1
    """Counts the row's changes: a flow re-applies its rules to a device when it grows."""


class DeviceSelector(BaseModel):
    """Which devices a rule applies to, by their registry metadata (all given parts must hold).

    ``device_type`` and ``area`` are globs; ``tags`` must all be on the
    device. A selector with any part set selects no unregistered device.

    >>> info = DeviceInfo("default", "p-1", type="pump", area="north", tags=frozenset({"a", "b"}))
    >>> DeviceSelector(area="n*", tags=["a"]).selects(info)
    True
    >>> DeviceSelector(tags=["c"]).selects(info)
    False
    >>> DeviceSelector().selects(None), DeviceSelector(device_type="pump").selects(None)
    (True, False)
    """

    model_config = ConfigDict(extra="forbid")

    device_type: str | None = Field(None, description="glob over the registered device type")
    area: str | None = Field(None, description="glob over the registered device area")
    tags: list[str] = Field(default_factory=list, description="tags the device must all have")

    def is_empty(self) -> bool:
        """True when it selects every device (no part set)."""
        return self.device_type is None and self.area is None and not self.tags

    def selects(self, info: DeviceInfo | None) -> bool:
        """Whether a device with this registry entry (None: unregistered) is selected."""
        if self.is_empty():
            return True
        if info is None:
            return False
        kind = self.device_type
        if kind is not None and not fnmatch.fnmatchcase(info.type or "", kind):
            return False
        if self.area is not None and not fnmatch.fnmatchcase(info.area or "", self.area):
            return False
        return all(tag in info.tags for tag in self.tags)


class DeviceRegistry:
    """A flow's in-memory view of the registry, replaced or updated by a loader thread.

    Readers (the series step, on every worker thread) call :meth:`lookup`
    and :meth:`admits` without a lock: updates build new dicts and swap them
    in, and ``version`` grows after each swap, so a reader that saw a new
    version sees the new dicts. Until the first load (``loaded`` False)
    every device is admitted: an unreachable registry never drops readings.
    """

    def __init__(self, default_policy: UnregisteredPolicy = "accept") -> None:
        self.default_policy: UnregisteredPolicy = default_policy
        self._devices: dict[tuple[str, str], DeviceInfo] = {}
        self._policies: dict[str, UnregisteredPolicy] = {}
        self.version = 0
        self.loaded = False
        self._lock = threading.Lock()  # between writers only

    def lookup(self, tenant: str, device: str) -> DeviceInfo | None:
        """The registry entry of a device (decommissioned ones too), or None."""
        return self._devices.get((tenant, device))

    def policy(self, tenant: str) -> UnregisteredPolicy:
        """The tenant's policy for unregistered devices (the default when it set none)."""
        return self._policies.get(tenant, self.default_policy)

    def admits(self, tenant: str, device: str) -> str | None:
        """None when the device's readings are processed, else why they are rejected."""
        if not self.loaded:
            return None
        info = self._devices.get((tenant, device))
        if info is not None:
            if info.status == "decommissioned":
                return f"device {device!r} is decommissioned"
            return None
        if self._policies.get(tenant, self.default_policy) == "reject":
            return (
                f"device {device!r} is not registered"
                f" (tenant {tenant!r} rejects unregistered devices)"
            )
        return None

    def __len__(self) -> int:
        return len(self._devices)

    def replace(
        self, devices: Iterable[DeviceInfo], policies: Mapping[str, UnregisteredPolicy]
    ) -> None:
        """Take a full load of the registry."""
        table = {(d.tenant, d.device): d for d in devices}
        with self._lock:
            self._devices = table
            self._policies = dict(policies)
            self.loaded = True
            self.version += 1

    def update(
        self, devices: Iterable[DeviceInfo], policies: Mapping[str, UnregisteredPolicy]
    ) -> int:
        """Take changed rows (a device is replaced when its revision is newer); the count taken."""
        with self._lock:
            table: dict[tuple[str, str], DeviceInfo] | None = None
            taken = 0
            for info in devices:
                key = (info.tenant, info.device)
                old = self._devices.get(key)
                if old is not None and old.revision >= info.revision:
                    continue
                if table is None:
                    table = dict(self._devices)
                table[key] = info
                taken += 1
            changed_policies = {t: p for t, p in policies.items() if self._policies.get(t) != p}
            if table is None and not changed_policies:
                return 0
            if table is not None:
                self._devices = table
            if changed_policies:
                self._policies = {**self._policies, **changed_policies}
            self.version += 1
            return taken + len(changed_policies)


def info_from_row(row: Mapping[str, Any]) -> DeviceInfo:
    """A :class:`DeviceInfo` from a row of the ``devices`` table."""
    return DeviceInfo(
        tenant=row["tenant"],
        device=row["device"],
        type=row.get("type"),
        area=row.get("area"),
        tags=frozenset(row.get("tags") or ()),
        status=row.get("status", "active"),
        revision=int(row.get("revision", 1)),
    )
