"""Alarm floods (EEMUA 191, ISA-18.2): one flood alarm instead of a wall of raises.

Every alarm transition the series step makes passes through one
:class:`FloodTracker` per tenant and area (``AlarmManagementConfig.areas``).
More than ``flood.raises`` raises in one aligned ``flood.window`` (event
time; 10-minute buckets by default, as EEMUA counts) is a flood: the
tracker raises one alarm of kind and rule ``flood`` (device: the area;
metric: ``alarms``; priority ``high``; raised at the bucket's start), and
while it lasts holds back every raise below ``flood.hold_below`` priority,
with the later transitions of the same alarm. It ends at the end of the
first later bucket with ``flood.end_at`` raises or fewer: the held alarms
still active are released then (their records, in order), and the flood
alarm clears with the summary. A held alarm that clears during the flood is
passed on at its clear (raise and clear together), so the journal is
complete and the same whatever order alarms arrive in.

>>> from datetime import UTC, datetime, timedelta
>>> from schemas.config import FloodConfig
>>> from flows.alarm_lifecycle import AlarmLifecycle
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> flood = FloodTracker("default", "plant", FloodConfig(raises=3, end_at=1, window=60))
>>> def raise_(i, second):
...     life = AlarmLifecycle("default", f"m-{i}", "temp", "hot", "threshold", "low")
...     return life.raise_(t0 + timedelta(seconds=second), "warning", 90.0, 80.0, "hot")
>>> [a.kind for i in range(5) for a in flood.update(raise_(i, i))]
['threshold', 'threshold', 'threshold', 'flood']
>>> flood.tick((t0 + timedelta(seconds=100)).timestamp())  # the next bucket is not over
[]
>>> [(a.kind, a.transition) for a in flood.tick((t0 + timedelta(seconds=120)).timestamp())]
[('threshold', 'raised'), ('threshold', 'raised'), ('flood', 'cleared')]

The flood alarm's transitions are this step's own: operators cannot
acknowledge or shelve it (the API refuses); it ends by itself.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter
from connectors.runtime.outputs import RoutedOutput
from flows.alarm_lifecycle import AlarmLifecycle
from schemas.config import AlarmManagementConfig, FloodConfig
from schemas.devices import DeviceInfo, DeviceRegistry
from schemas.models import PRIORITY_RANK, Alarm

__all__ = ["FloodLogic", "FloodTracker", "manage_floods"]

log = get_logger("flows.alarm_flood")

HELD = counter(
    "streamforge_alarms_held_total",
    "Alarm raises held back during a flood, by outcome (released: still active at its end; "
    "came_and_went: passed on with their clear during it)",
)
FLOODS = counter("streamforge_alarm_floods_total", "Alarm floods, by tenant and area")

_TICK_S = 5.0
"""Wall-clock seconds between checks for a flood's end while no alarm comes."""


class FloodTracker:
    """The raises of one tenant's area, its flood alarm, and what the flood holds back.

    Raises are counted in aligned buckets of ``window`` (event time), so a
    flood's identity does not depend on the order alarms arrive in from
    different workers: the flood of a bucket has one id (its raise instant is
    the bucket's start), and it ends at the end of the first later bucket
    with ``end_at`` raises or fewer. Holding only delays: every held record is
    passed on, at the flood's end or with the alarm's clear, so stores get
    the same records whatever the order (a replay after a crash included).
    """

    __slots__ = ("_area", "_config", "_life", "came_and_went", "counts", "held", "last_epoch",
                 "started")  # fmt: skip

    def __init__(self, tenant: str, area: str, config: FloodConfig) -> None:
        self._area = area
        self._config = config
        self._life = AlarmLifecycle(tenant, area, "alarms", "flood", "flood", "high")
        self.counts: dict[int, int] = {}  # bucket (epoch // window) -> raises in it
        self.started = -1  # the bucket of the current flood
        self.held: dict[str, list[Alarm]] = {}  # alarm id -> its held records, in order
        self.came_and_went = 0
        self.last_epoch = float("-inf")  # the latest event time seen

    @property
    def flooding(self) -> bool:
        """Whether a flood is on."""
        return self._life.active

    def update(self, alarms: list[Alarm]) -> list[Alarm]:
        """The transitions to pass on, given these of the area (in order)."""
        out: list[Alarm] = []
        hold_below = PRIORITY_RANK[self._config.hold_below]
        window = self._config.window
        held = self.held
        for alarm in alarms:
            epoch = alarm.ts.timestamp()
            if epoch > self.last_epoch:
                self.last_epoch = epoch
            if alarm.transition == "raised" and alarm.kind != "flood":
                bucket = int(epoch // window)
                self.counts[bucket] = self.counts.get(bucket, 0) + 1
                out.extend(self._start(bucket))
            out.extend(self._end(self.last_epoch))
            if alarm.id in held:
                if alarm.transition == "cleared":  # came and went: written, never annunciated live
                    out.extend(held.pop(alarm.id))
                    out.append(alarm)
                    self.came_and_went += 1
                    HELD.inc(outcome="came_and_went")
                else:
                    held[alarm.id].append(alarm)
                continue
            if (
                self._life.active
                and alarm.transition == "raised"
                and PRIORITY_RANK[alarm.priority] < hold_below
            ):
                held[alarm.id] = [alarm]
                continue
            out.append(alarm)
        return out

    def tick(self, epoch: float) -> list[Alarm]:
        """The end of a flood once event time has moved on to ``epoch``."""
        return self._end(epoch)

    def release(self) -> list[Alarm]:
        """Every held record, in order, and nothing held any more (a flood's end, or the end
        of a finite input: the journal stays whole)."""
        released = [record for records in self.held.values() for record in records]
        HELD.inc(len(self.held), outcome="released")
        self.held = {}
        return released

    def _start(self, bucket: int) -> list[Alarm]:
        config, life = self._config, self._life
        if life.active or self.counts[bucket] <= config.raises:
            return []
        for old in [b for b in self.counts if b < bucket - 1]:
            del self.counts[old]
        self.started = bucket
        self.came_and_went = 0
        FLOODS.inc(tenant=life.tenant, area=self._area)
        begin = datetime.fromtimestamp(bucket * config.window, UTC)
        message = (
            f"alarm flood in {self._area}: more than {config.raises} alarms raised in the"
            f" {config.window:g} s from {begin.isoformat()}"
        )
        log.warning(message, extra={"step": "flood", "tenant": life.tenant, "area": self._area})
        return life.raise_(begin, config.severity, self.counts[bucket], float(config.raises),
                           message)  # fmt: skip

    def _end(self, epoch: float) -> list[Alarm]:
        config, life = self._config, self._life
        if not life.active:
            return []
        current = int(epoch // config.window)
        quiet = next(
            (b for b in range(self.started + 1, current) if self.counts.get(b, 0) <= config.end_at),
            None,
        )
        if quiet is None:
            return []
        still = len(self.held)
        released = self.release()
        message = (
            f"cleared: alarm flood in {self._area} over; held back"
            f" {still + self.came_and_went} raises below {config.hold_below} priority:"
            f" {still} still active (released now), {self.came_and_went} came and went"
        )
        ts = datetime.fromtimestamp((quiet + 1) * config.window, UTC)
        for old in [b for b in self.counts if b < quiet]:
            del self.counts[old]
        return released + life.clear(ts, self.counts.get(quiet, 0), float(config.end_at),
                                     message, hold=False)  # fmt: skip


class FloodLogic(StatefulBatchLogic[list[Alarm], tuple[str, list[Alarm]], FloodTracker | None]):
    """Bytewax adapter of a :class:`FloodTracker` (one per tenant and area key).

    The tracker is made from the first alarm (Bytewax does not pass the key
    to the builder). While a flood is on the logic asks to be woken every
    few seconds (wall clock) to end it when no alarm comes: event time is
    then advanced by the wall-clock time elapsed since the latest alarm.
    """

    def __init__(
        self,
        config: AlarmManagementConfig,
        resume: FloodTracker | None,
        registry: DeviceRegistry | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.tracker = resume
        self._seen_at = time.time()  # wall clock of the latest alarm

    def on_batch(self, values: list[list[Alarm]]) -> tuple[list[tuple[str, list[Alarm]]], bool]:
        """Pass the transitions on, held or not."""
        self._seen_at = time.time()
        tracker = self.tracker
        if tracker is None:
            first = values[0][0]
            area = self.config.area_of(first.device, _info(self.registry, first))
            tracker = self.tracker = FloodTracker(first.tenant, area, self.config.flood)
        out = [a for chunk in values for a in tracker.update(chunk)]
        return ([("alarm", out)] if out else []), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[tuple[str, list[Alarm]]], bool]:
        """End a flood that no alarm came to end."""
        tracker = self.tracker
        if tracker is None:
            return [], StatefulBatchLogic.RETAIN
        now = tracker.last_epoch + (time.time() - self._seen_at)
        out = tracker.tick(now)
        return ([("alarm", out)] if out else []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple[str, list[Alarm]]], bool]:
        """A finite input ended: pass on what the flood still holds."""
        out = self.tracker.release() if self.tracker is not None else []
        return ([("alarm", out)] if out else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        """Every few seconds while a flood is on."""
        if self.tracker is None or not self.tracker.flooding:
            return None
        return datetime.fromtimestamp(time.time() + _TICK_S, UTC)

    def snapshot(self) -> FloodTracker | None:
        """The tracker (pickled whole)."""
        return self.tracker


def _info(registry: DeviceRegistry | None, alarm: Alarm) -> DeviceInfo | None:
    return None if registry is None else registry.lookup(alarm.tenant, alarm.device)


def _by_area(config: AlarmManagementConfig, registry: DeviceRegistry | None) -> Any:
    # (tenant, device) -> area, bounded by the devices that raise alarms; forgotten
    # when the registry changes (a device moved to another area).
    areas: dict[tuple[str, str], str] = {}
    seen = [-1]

    def split(item: RoutedOutput) -> list[tuple[str, list[Alarm]]]:
        if registry is not None and registry.version != seen[0]:
            areas.clear()
            seen[0] = registry.version
        groups: dict[str, list[Alarm]] = {}
        for alarm in item[1][1]:
            key = (alarm.tenant, alarm.device)
            area = areas.get(key)
            if area is None:
                area = areas[key] = config.area_of(alarm.device, _info(registry, alarm))
            groups.setdefault(f"{alarm.tenant}/{area}", []).append(alarm)
        return list(groups.items())

    return split


def manage_floods(
    step_id: str,
    outputs: Stream[RoutedOutput],
    config: AlarmManagementConfig,
    registry: DeviceRegistry | None = None,
) -> Stream[RoutedOutput]:
    """The series step's outputs with their alarm transitions passed through flood trackers.

    Alarm chunks are re-keyed by ``tenant/area`` (a device's area: its
    registry entry's, else ``alarm_management.areas``); other outputs go by
    untouched.
    """
    branch = op.branch(f"{step_id}_alarms", outputs, lambda item: item[1][0] == "alarm")
    keyed = op.flat_map(f"{step_id}_by_area", branch.trues, _by_area(config, registry))

    def build(resume: FloodTracker | None) -> FloodLogic:
        return FloodLogic(config, resume, registry)

    managed: Stream[RoutedOutput] = op.stateful_batch(step_id, keyed, build)
    return op.merge(f"{step_id}_merge", branch.falses, managed)
