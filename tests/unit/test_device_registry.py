"""The device registry in a flow: admission, rules by type, area and tags, decommissioning.

The registry itself is read from TimescaleDB (tests/integration/test_device_registry_flow.py);
here it is an in-memory :class:`DeviceRegistry` filled by hand.
"""

from __future__ import annotations

import pickle
from collections import Counter
from datetime import UTC, datetime, timedelta

from bytewax.testing import TestingSink, TestingSource, run_main

from flows.alarm_flood import _by_area
from flows.config import PipelineConfig
from flows.ingest import build_flow
from flows.kernels.series import RETIRED, SeriesBucketLogic
from flows.series import SeriesStart, series_processor
from schemas.config import AlarmManagementConfig
from schemas.devices import DeviceInfo, DeviceRegistry
from schemas.models import Alarm, DeadLetter, Reading

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRESS_HOT = {"name": "press_hot", "metric": "temp", "device_type": "press", "levels": {"major": 90}}
LINE_HOT = {"name": "line_hot", "metric": "temp", "tags": ["line-1"], "levels": {"warning": 80}}


def reading(device: str, second: float, value: float, metric: str = "temp") -> Reading:
    return Reading(device=device, metric=metric, ts=T0 + timedelta(seconds=second), value=value)


def registry_of(*infos: DeviceInfo, policy: str = "accept") -> DeviceRegistry:
    registry = DeviceRegistry()
    registry.replace(infos, {"default": policy})  # type: ignore[dict-item]
    return registry


def alarms(outputs: list) -> list[Alarm]:
    return [r for kind, records in outputs if kind == "alarm" for r in records]


def dead(outputs: list) -> list[DeadLetter]:
    return [r for kind, records in outputs if kind == "dead_letter" for r in records]


def test_an_unloaded_registry_admits_everyone_and_updates_go_by_revision() -> None:
    registry = DeviceRegistry(default_policy="reject")
    assert registry.admits("default", "anyone") is None  # not loaded yet: never drop
    registry.replace([DeviceInfo("default", "p-1", revision=2)], {})
    assert registry.admits("default", "anyone") is not None
    version = registry.version
    assert registry.update([DeviceInfo("default", "p-1", type="old", revision=1)], {}) == 0
    assert registry.version == version and registry.lookup("default", "p-1").type is None
    assert registry.update([DeviceInfo("default", "p-1", type="press", revision=3)], {}) == 1
    assert registry.version == version + 1 and registry.lookup("default", "p-1").type == "press"
    assert registry.update([], {"default": "accept"}) == 1
    assert registry.admits("default", "anyone") is None


def test_rejected_and_decommissioned_devices_get_dead_letters_not_state() -> None:
    registry = registry_of(
        DeviceInfo("default", "p-1"),
        DeviceInfo("default", "old-1", status="decommissioned"),
        policy="reject",
    )
    start = SeriesStart(PipelineConfig(alarms=[]), registry)
    assert not isinstance(start(reading("p-1", 0, 1.0)), DeadLetter)
    unknown = start(reading("stranger", 0, 1.0))
    assert isinstance(unknown, DeadLetter) and unknown.step == "registry"
    assert unknown.reason == (
        "device 'stranger' is not registered (tenant 'default' rejects unregistered devices)"
    )
    gone = start(reading("old-1", 0, 1.0))
    assert isinstance(gone, DeadLetter) and gone.reason == "device 'old-1' is decommissioned"


def test_rules_select_devices_by_registered_type_and_tags() -> None:
    registry = registry_of(
        DeviceInfo("default", "p-1", type="press", tags=frozenset({"line-1"})),
        DeviceInfo("default", "pump-1", type="pump"),
    )
    start = SeriesStart(PipelineConfig(alarms=[PRESS_HOT, LINE_HOT]), registry)
    assert [t.rule for t in start(reading("p-1", 0, 1.0)).threshold_alarms] == [
        "press_hot",
        "line_hot",
    ]
    assert start(reading("pump-1", 0, 1.0)).threshold_alarms == []
    assert start(reading("unregistered", 0, 1.0)).threshold_alarms == []  # selectors need an entry


def test_decommissioning_ends_the_device_state_and_it_leaves_the_snapshot() -> None:
    registry = registry_of(DeviceInfo("default", "p-1", type="press"), DeviceInfo("default", "p-2"))
    logic = SeriesBucketLogic(series_processor(PipelineConfig(alarms=[PRESS_HOT]), registry), None)
    outputs, _ = logic.on_batch(
        [[reading("p-1", 0, 95.0), reading("p-1", 0, 1.0, "rpm"), reading("p-2", 0, 5.0)]]
    )
    assert [a.transition for a in alarms(outputs)] == ["raised"]
    assert set(logic.snapshot()) == {"default/p-1/temp", "default/p-1/rpm", "default/p-2/temp"}
    before = RETIRED.value(reason="decommissioned")
    registry.update([DeviceInfo("default", "p-1", status="decommissioned", revision=2)], {})
    assert logic.notify_at() is not None
    outputs, _ = logic.on_notify()
    (cleared,) = alarms(outputs)
    assert cleared.transition == "cleared"
    assert cleared.message == ("cleared: device 'p-1' is decommissioned: the series' state ended")
    assert set(pickle.loads(pickle.dumps(logic.snapshot()))) == {"default/p-2/temp"}
    assert RETIRED.value(reason="decommissioned") - before == 2
    # Its readings from now on are dead letters; the other device goes on.
    outputs, _ = logic.on_batch([[reading("p-1", 1, 96.0), reading("p-2", 1, 6.0)]])
    assert [d.reason for d in dead(outputs)] == ["device 'p-1' is decommissioned"]
    assert set(logic.snapshot()) == {"default/p-2/temp"}


def test_a_changed_registry_entry_reconciles_the_device_series() -> None:
    registry = registry_of(DeviceInfo("default", "p-1", type="pump"))
    logic = SeriesBucketLogic(series_processor(PipelineConfig(alarms=[PRESS_HOT]), registry), None)
    outputs, _ = logic.on_batch([[reading("p-1", 0, 95.0)]])
    assert alarms(outputs) == []  # a pump: the press rule does not watch it
    registry.update([DeviceInfo("default", "p-1", type="press", revision=2)], {})
    outputs, _ = logic.on_notify()
    assert [(a.rule, a.transition) for a in alarms(outputs)] == [("press_hot", "raised")]
    registry.update([DeviceInfo("default", "p-1", type="pump", revision=3)], {})
    outputs, _ = logic.on_notify()
    (cleared,) = alarms(outputs)
    assert cleared.message == "cleared: rule 'press_hot' no longer applies to device 'p-1'"


def test_a_resumed_bucket_drops_devices_decommissioned_while_it_was_down() -> None:
    registry = registry_of(DeviceInfo("default", "p-1"), DeviceInfo("default", "p-2"))
    processor = series_processor(PipelineConfig(alarms=[]), registry)
    logic = SeriesBucketLogic(processor, None)
    logic.on_batch([[reading("p-1", 0, 1.0), reading("p-2", 0, 2.0)]])
    snapshot = pickle.dumps(logic.snapshot())
    registry.update([DeviceInfo("default", "p-2", status="decommissioned", revision=2)], {})
    resumed = SeriesBucketLogic(processor, pickle.loads(snapshot))
    assert set(resumed.snapshot()) == {"default/p-1/temp"}


def test_the_unregistered_policy_changing_to_reject_ends_discovered_devices() -> None:
    registry = registry_of(DeviceInfo("default", "p-1"))
    logic = SeriesBucketLogic(series_processor(PipelineConfig(alarms=[]), registry), None)
    logic.on_batch([[reading("p-1", 0, 1.0), reading("found-1", 0, 2.0)]])
    assert set(logic.snapshot()) == {"default/p-1/temp", "default/found-1/temp"}
    before = RETIRED.value(reason="unregistered")
    registry.update([], {"default": "reject"})
    logic.on_notify()
    assert set(logic.snapshot()) == {"default/p-1/temp"}
    assert RETIRED.value(reason="unregistered") - before == 1


def test_flood_areas_come_from_the_registry_first() -> None:
    registry = registry_of(DeviceInfo("default", "n-1", area="south"))
    split = _by_area(AlarmManagementConfig(areas={"north": "n-*"}), registry)
    alarm = Alarm.__new__(Alarm)
    object.__setattr__(alarm, "tenant", "default")
    for device, area in (("n-1", "south"), ("n-2", "north")):
        object.__setattr__(alarm, "device", device)
        assert [key for key, _ in split(("0", ("alarm", [alarm])))] == [f"default/{area}"]
    registry.update([DeviceInfo("default", "n-1", area="east", revision=2)], {})
    object.__setattr__(alarm, "device", "n-1")
    assert [key for key, _ in split(("0", ("alarm", [alarm])))] == ["default/east"]


def test_a_flow_built_with_a_registry_rejects_and_selects() -> None:
    registry = registry_of(DeviceInfo("default", "p-1", type="press"), policy="reject")
    config = PipelineConfig(alarms=[PRESS_HOT], rollups={"enabled": False})
    out: list = []
    readings = [reading("p-1", 0, 95.0), reading("stranger", 0, 95.0)]
    run_main(build_flow(config, sources=[TestingSource(readings)], sinks=[TestingSink(out)],
                        registry=registry))  # fmt: skip
    kinds = Counter(kind for kind, _ in out)
    assert kinds["alarm"] == 1 and kinds["dead_letter"] == 1 and kinds["telemetry"] == 1
