"""The request plan: which Modbus reads fetch a device's tags, neighbours coalesced.

>>> from connectors.modbus.config import ModbusDevice
>>> device = ModbusDevice.model_validate({"name": "press-1", "groups": [{"tags": [
...     {"metric": "a", "address": 0}, {"metric": "b", "address": 1, "type": "float32"},
...     {"metric": "c", "address": 12}, {"metric": "d", "address": 500}]}]})
>>> [(b.address, b.count, b.metrics) for b in plan_device(device)]
[(0, 13, ('a', 'b', 'c')), (500, 1, ('d',))]

Tags of one group, one unit id and one function are sorted by address and
merged greedily: a tag joins the current request when the unused registers
between it and the request number at most ``max_gap`` and the request stays
within ``max_registers_per_read`` (bits: ``max_bits_per_read``). Tags may
overlap (a ``uint16`` and a ``bool`` of one of its bits). The plan is logged
when a partition starts; :func:`describe_plan` gives it as plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connectors.modbus.config import BIT_FUNCTIONS, ModbusDevice, ModbusTag

FUNCTION_CODES: dict[str, int] = {
    "coil": 1,
    "discrete_input": 2,
    "holding_register": 3,
    "input_register": 4,
}


@dataclass(frozen=True, slots=True)
class PlacedTag:
    """A tag and where its first register (or bit) sits in the block's response."""

    tag: ModbusTag
    offset: int


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request of a poll: ``count`` registers (or bits) from ``address``."""

    device: str
    group: str
    interval: float
    unit_id: int
    function: str
    address: int
    count: int
    tags: tuple[PlacedTag, ...]

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metric names of the tags this request reads."""
        return tuple(p.tag.metric for p in self.tags)

    @property
    def function_code(self) -> int:
        """The Modbus function code of the request."""
        return FUNCTION_CODES[self.function]

    def describe(self) -> dict[str, Any]:
        """The request as a JSON-compatible dict (for logs and inspection)."""
        return {
            "device": self.device,
            "group": self.group,
            "interval_s": self.interval,
            "unit_id": self.unit_id,
            "function": self.function,
            "function_code": self.function_code,
            "address": self.address,
            "count": self.count,
            "tags": list(self.metrics),
        }


def coalesce(
    tags: Iterable[ModbusTag], max_gap: int, max_count: int
) -> list[tuple[int, int, list[PlacedTag]]]:
    """(address, count, placed tags) per request for tags of one function.

    Greedy over tags sorted by address; a tag wider than ``max_count`` is
    the caller's error (the config validation rejects it).
    """
    blocks: list[tuple[int, int, list[PlacedTag]]] = []
    start = end = -1
    members: list[ModbusTag] = []
    for tag in sorted(tags, key=lambda t: (t.address, t.width)):
        tag_end = tag.address + tag.width
        fits = members and tag.address - end <= max_gap and max(end, tag_end) - start <= max_count
        if fits:
            end = max(end, tag_end)
            members.append(tag)
            continue
        if members:
            blocks.append((start, end - start, [PlacedTag(t, t.address - start) for t in members]))
        start, end, members = tag.address, tag_end, [tag]
    if members:
        blocks.append((start, end - start, [PlacedTag(t, t.address - start) for t in members]))
    return blocks


def plan_device(device: ModbusDevice) -> list[ReadBlock]:
    """Every request of every group of a device, groups in config order."""
    plan: list[ReadBlock] = []
    for group in device.groups:
        by_function: dict[str, list[ModbusTag]] = {}
        for tag in group.tags:
            by_function.setdefault(tag.function, []).append(tag)
        for function in FUNCTION_CODES:
            if function not in by_function:
                continue
            limit = (
                device.max_bits_per_read
                if function in BIT_FUNCTIONS
                else device.max_registers_per_read
            )
            for address, count, placed in coalesce(by_function[function], device.max_gap, limit):
                plan.append(
                    ReadBlock(
                        device=device.name,
                        group=group.name,
                        interval=group.interval,
                        unit_id=device.unit_id,
                        function=function,
                        address=address,
                        count=count,
                        tags=tuple(placed),
                    )
                )
    return plan


def describe_plan(blocks: Iterable[ReadBlock]) -> list[dict[str, Any]]:
    """A plan as JSON-compatible dicts, one per request."""
    return [block.describe() for block in blocks]
