"""Alarm floods (EEMUA 191, ISA-18.2): one flood alarm instead of a wall of raises.

Every alarm transition the series step makes passes through one
:class:`FloodTracker` per tenant and area (``AlarmManagementConfig.areas``).
More than ``flood.raises`` raises within ``flood.window`` (event time) is a
flood: the tracker raises one alarm of kind and rule ``flood`` (device: the
area; metric: ``alarms``; priority ``high``), and while it lasts holds back
every raise below ``flood.hold_below`` priority, with the later transitions
of the same alarm. The flood ends once the raises within the window are
``flood.end_at`` or fewer: the held alarms still active are released (their
records, in order, so stores and consumers see their whole history), those
that came and went are only counted, and the flood alarm clears with the
summary.

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
>>> [(a.kind, a.transition) for a in flood.tick((t0 + timedelta(seconds=70)).timestamp())]
[('threshold', 'raised'), ('threshold', 'raised'), ('flood', 'cleared')]

The flood alarm's transitions are this step's own: operators cannot
acknowledge or shelve it (the API refuses); it ends by itself.
"""

from __future__ import annotations

import time
from collections import deque
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
from schemas.models import PRIORITY_RANK, Alarm

__all__ = ["FloodLogic", "FloodTracker", "manage_floods"]

log = get_logger("flows.alarm_flood")

HELD = counter(
    "streamforge_alarms_held_total",
    "Alarm raises held back during a flood, by outcome (released: still active at its end; "
    "summarised: came and went during it)",
)
FLOODS = counter("streamforge_alarm_floods_total", "Alarm floods, by tenant and area")

_TICK_S = 5.0
"""Wall-clock seconds between checks for a flood's end while no alarm comes."""


class FloodTracker:
    """The raises of one tenant's area, its flood alarm, and what the flood holds back."""

    __slots__ = ("_area", "_config", "_life", "came_and_went", "held", "last_epoch", "raises")

    def __init__(self, tenant: str, area: str, config: FloodConfig) -> None:
        self._area = area
        self._config = config
        self._life = AlarmLifecycle(tenant, area, "alarms", "flood", "flood", "high")
        self.raises: deque[float] = deque()  # epochs of the raises within the window
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
        held = self.held
        for alarm in alarms:
            epoch = alarm.ts.timestamp()
            if epoch > self.last_epoch:
                self.last_epoch = epoch
            if alarm.transition == "raised":
                self.raises.append(epoch)
            out.extend(self._check(epoch))
            if alarm.id in held:
                if alarm.transition == "cleared":
                    del held[alarm.id]
                    self.came_and_went += 1
                    HELD.inc(outcome="summarised")
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
        """The end of a flood once the window has moved on to ``epoch`` (event time)."""
        return self._check(epoch)

    def _check(self, epoch: float) -> list[Alarm]:
        config = self._config
        raises = self.raises
        while raises and epoch - raises[0] >= config.window:
            raises.popleft()
        count = len(raises)
        life = self._life
        ts = datetime.fromtimestamp(epoch, UTC)
        if not life.active:
            if count <= config.raises:
                return []
            FLOODS.inc(tenant=life.tenant, area=self._area)
            message = (
                f"alarm flood in {self._area}: {count} alarms raised within {config.window:g} s"
            )
            log.warning(message, extra={"step": "flood", "tenant": life.tenant, "area": self._area})
            self.came_and_went = 0
            return life.raise_(ts, config.severity, count, float(config.raises), message)
        if count > config.end_at:
            return []
        released = [record for records in self.held.values() for record in records]
        still = len(self.held)
        HELD.inc(still, outcome="released")
        message = (
            f"cleared: alarm flood in {self._area} over; held back {still + self.came_and_went} "
            f"raises below {config.hold_below} priority: {still} still active (released now), "
            f"{self.came_and_went} came and went"
        )
        self.held = {}
        return released + life.clear(ts, count, float(config.end_at), message, hold=False)


class FloodLogic(StatefulBatchLogic[list[Alarm], tuple[str, list[Alarm]], FloodTracker | None]):
    """Bytewax adapter of a :class:`FloodTracker` (one per tenant and area key).

    The tracker is made from the first alarm (Bytewax does not pass the key
    to the builder). While a flood is on the logic asks to be woken every
    few seconds (wall clock) to end it when no alarm comes: event time is
    then advanced by the wall-clock time elapsed since the latest alarm.
    """

    def __init__(self, config: AlarmManagementConfig, resume: FloodTracker | None) -> None:
        self.config = config
        self.tracker = resume
        self._seen_at = time.time()  # wall clock of the latest alarm

    def on_batch(self, values: list[list[Alarm]]) -> tuple[list[tuple[str, list[Alarm]]], bool]:
        """Pass the transitions on, held or not."""
        self._seen_at = time.time()
        tracker = self.tracker
        if tracker is None:
            first = values[0][0]
            area = self.config.area_of(first.device)
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

    def notify_at(self) -> datetime | None:
        """Every few seconds while a flood is on."""
        if self.tracker is None or not self.tracker.flooding:
            return None
        return datetime.fromtimestamp(time.time() + _TICK_S, UTC)

    def snapshot(self) -> FloodTracker | None:
        """The tracker (pickled whole)."""
        return self.tracker


def _by_area(config: AlarmManagementConfig) -> Any:
    areas: dict[str, str] = {}  # device -> area, bounded by the devices that raise alarms

    def split(item: RoutedOutput) -> list[tuple[str, list[Alarm]]]:
        groups: dict[str, list[Alarm]] = {}
        for alarm in item[1][1]:
            area = areas.get(alarm.device)
            if area is None:
                area = areas[alarm.device] = config.area_of(alarm.device)
            groups.setdefault(f"{alarm.tenant}/{area}", []).append(alarm)
        return list(groups.items())

    return split


def manage_floods(
    step_id: str, outputs: Stream[RoutedOutput], config: AlarmManagementConfig
) -> Stream[RoutedOutput]:
    """The series step's outputs with their alarm transitions passed through flood trackers.

    Alarm chunks are re-keyed by ``tenant/area``; other outputs go by untouched.
    """
    branch = op.branch(f"{step_id}_alarms", outputs, lambda item: item[1][0] == "alarm")
    keyed = op.flat_map(f"{step_id}_by_area", branch.trues, _by_area(config))

    def build(resume: FloodTracker | None) -> FloodLogic:
        return FloodLogic(config, resume)

    managed: Stream[RoutedOutput] = op.stateful_batch(step_id, keyed, build)
    return op.merge(f"{step_id}_merge", branch.falses, managed)
