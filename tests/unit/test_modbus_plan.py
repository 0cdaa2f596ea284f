"""Request planning: coalescing within gap and size limits, one request per block."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.modbus.config import ModbusDevice, ModbusSourceConfig, ModbusTag
from connectors.modbus.plan import coalesce, plan_device
from connectors.modbus.source import describe_source_plan, source_plan


def _device(tags: list[dict[str, Any]], **fields: Any) -> ModbusDevice:
    return ModbusDevice.model_validate({"name": "d", "groups": [{"tags": tags}], **fields})


def _tags(*specs: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"metric": f"m{i}", "address": a, "type": t} for i, (a, t) in enumerate(specs)]


def test_contiguous_registers_are_one_request_with_offsets() -> None:
    plan = plan_device(_device(_tags((0, "uint16"), (1, "float32"), (3, "int64"), (7, "int16"))))
    assert len(plan) == 1
    block = plan[0]
    assert (block.function, block.address, block.count) == ("holding_register", 0, 8)
    assert [(p.tag.metric, p.offset) for p in block.tags] == [
        ("m0", 0),
        ("m1", 1),
        ("m2", 3),
        ("m3", 7),
    ]


def test_gaps_up_to_max_gap_are_read_through_and_larger_gaps_split() -> None:
    tags = _tags((0, "uint16"), (6, "uint16"), (17, "uint16"))
    # gaps: 5 unused registers (1..5), then 10 (7..16)
    assert [(b.address, b.count) for b in plan_device(_device(tags, max_gap=5))] == [
        (0, 7),
        (17, 1),
    ]
    assert [(b.address, b.count) for b in plan_device(_device(tags, max_gap=10))] == [(0, 18)]
    assert len(plan_device(_device(tags, max_gap=0))) == 3


def test_requests_never_exceed_125_registers() -> None:
    tags = [{"metric": f"m{i}", "address": 2 * i, "type": "float32"} for i in range(100)]
    plan = plan_device(_device(tags))
    assert [(b.address, b.count) for b in plan] == [(0, 124), (124, 76)]
    assert sum(len(b.tags) for b in plan) == 100


def test_configurable_register_limit() -> None:
    tags = [{"metric": f"m{i}", "address": i} for i in range(10)]
    plan = plan_device(_device(tags, max_registers_per_read=4))
    assert [(b.address, b.count) for b in plan] == [(0, 4), (4, 4), (8, 2)]


def test_bits_coalesce_up_to_2000() -> None:
    tags = [{"metric": f"c{i}", "function": "coil", "address": i * 10} for i in range(300)]
    plan = plan_device(_device(tags, max_gap=10))
    assert [(b.function, b.address, b.count) for b in plan] == [
        ("coil", 0, 1991),
        ("coil", 2000, 991),
    ]


def test_functions_and_groups_are_never_merged() -> None:
    device = ModbusDevice.model_validate(
        {
            "name": "d",
            "groups": [
                {
                    "name": "fast",
                    "interval": "100ms",
                    "tags": [
                        {"metric": "h0", "address": 0},
                        {"metric": "i0", "function": "input_register", "address": 1},
                        {"metric": "c0", "function": "coil", "address": 0},
                        {"metric": "d0", "function": "discrete_input", "address": 0},
                    ],
                },
                {"name": "slow", "interval": "5s", "tags": [{"metric": "h1", "address": 1}]},
            ],
        }
    )
    plan = plan_device(device)
    assert [(b.group, b.function) for b in plan] == [
        ("fast", "coil"),
        ("fast", "discrete_input"),
        ("fast", "holding_register"),
        ("fast", "input_register"),
        ("slow", "holding_register"),
    ]
    assert [b.interval for b in plan] == [0.1, 0.1, 0.1, 0.1, 5.0]
    assert [b.function_code for b in plan] == [1, 2, 3, 4, 3]


def test_overlapping_tags_share_registers() -> None:
    tags = [
        {"metric": "word", "address": 5},
        {"metric": "bit3", "address": 5, "type": "bool", "bit": 3},
        {"metric": "long", "address": 4, "type": "int32"},
    ]
    (block,) = plan_device(_device(tags))
    assert (block.address, block.count) == (4, 2)
    assert {p.tag.metric: p.offset for p in block.tags} == {"long": 0, "word": 1, "bit3": 1}


def test_source_plan_is_grouped_by_connection_and_describable() -> None:
    config = ModbusSourceConfig.model_validate(
        {
            "devices": [
                {
                    "name": "a",
                    "gateway": "line-1",
                    "unit_id": 1,
                    "groups": [{"tags": _tags((0, "uint16"))}],
                },
                {
                    "name": "b",
                    "gateway": "line-1",
                    "unit_id": 2,
                    "groups": [{"tags": _tags((0, "uint16"))}],
                },
                {"name": "c", "unit_id": 1, "groups": [{"tags": _tags((0, "uint16"))}]},
            ]
        }
    )
    plan = source_plan(config)
    assert sorted(plan) == ["c", "line-1"]
    assert [(b.device, b.unit_id) for b in plan["line-1"]] == [("a", 1), ("b", 2)]
    described = describe_source_plan(config)
    assert described[0] == {
        "partition": "line-1",
        "device": "a",
        "group": "default",
        "interval_s": 1.0,
        "unit_id": 1,
        "function": "holding_register",
        "function_code": 3,
        "address": 0,
        "count": 1,
        "tags": ["m0"],
    }
    assert len(described) == 3


WIDTHS = {"uint16": 1, "int32": 2, "float64": 4}


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(sorted(WIDTHS))), min_size=1, max_size=60
    ),
    max_gap=st.integers(0, 20),
    max_count=st.integers(4, 125),
)
def test_coalescing_covers_every_tag_within_limits_and_is_maximal(
    specs: list[tuple[int, str]], max_gap: int, max_count: int
) -> None:
    tags = [ModbusTag(metric=f"m{i}", address=a, type=t) for i, (a, t) in enumerate(specs)]
    blocks = coalesce(tags, max_gap, max_count)
    placed = [p for _, _, members in blocks for p in members]
    assert sorted(p.tag.metric for p in placed) == sorted(t.metric for t in tags)
    for address, count, members in blocks:
        assert 1 <= count <= max_count
        for p in members:  # each tag lies wholly inside its request
            assert p.offset == p.tag.address - address
            assert p.offset >= 0 and p.offset + p.tag.width <= count
    # Greedy maximality: the next block could not have joined the previous one.
    for (a1, c1, _), (_a2, _c2, members2) in itertools.pairwise(blocks):
        first = min(members2, key=lambda p: (p.tag.address, p.tag.width)).tag
        gap = first.address - (a1 + c1)
        merged = max(a1 + c1, first.address + first.width) - a1
        assert gap > max_gap or merged > max_count
