"""StreamForge's seeded, deterministic plant simulator as a Bytewax source.

>>> from datetime import datetime, timezone
>>> from bytewax import operators as op
>>> from bytewax.dataflow import Dataflow
>>> from bytewax.testing import TestingSink, run_main
>>> config = SimulatorSourceConfig(devices=10, metrics=5, rate=0, limit=1000, partitions=2,
...                                start=datetime(2026, 1, 1, tzinfo=timezone.utc))
>>> flow = Dataflow("simulated-plant")
>>> readings = op.input("plant", flow, SimulatorSource(config))
>>> out: list = []
>>> op.output("out", readings, TestingSink(out))
>>> run_main(flow)                        # exactly 1000 readings, then EOF
>>> len(out), len({(r.device, r.metric) for r in out}), max(r.ts for r in out).isoformat()
(1000, 50, '2026-01-01T00:00:19+00:00')
>>> partition_devices(config, 1), partition_quota(config, partition_devices(config, 1))
([1, 3, 5, 7, 9], 500)

The plant itself (metrics, behaviours, injected anomalies and their ground
truth) lives in :mod:`connectors.simulator.plant` and is usable without
Bytewax; its public names are re-exported here::

    plant = PlantSimulator(config)
    plant.series()              # [SeriesSpec(device, metric, unit, kind, value_type)]
    plant.step_readings(k)      # all readings of step k
    plant.readings(limit)       # iterator, unpaced
    plant.ground_truth(steps)   # [InjectedAnomaly(device, metric, kind, start, end, ...)]

Semantics of the config (``connectors/simulator/config.py``):

- ``devices`` x ``metrics`` series; step ``k`` emits every series' reading
  for timestamp ``k`` (device-major), then step ``k + 1``.
- ``start`` set: timestamps are ``start + k * interval_s`` (a replay of
  history); unset: the wall clock when a step is generated.
- ``rate``: readings per second for the whole plant; every partition steps
  at ``rate / (devices * metrics)`` steps per second, so the plant stays in
  step. ``0``: as fast as the flow takes them.
- ``limit``: the total number of readings, exactly. The plant's first
  ``limit`` readings (in step order) are split between the partitions, so
  the flow emits the same readings whatever the number of partitions.
- ``partitions``: partition ``i`` owns devices ``i, i + P, i + 2P, ...``.
- ``seed``: same seed and config, same readings (timestamps aside, when live).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.simulator.config import SimulatorSourceConfig
from connectors.simulator.model import (
    ANOMALY_KINDS,
    CATALOGUE,
    InjectedAnomaly,
    MetricSpec,
    SeriesSpec,
)
from connectors.simulator.plant import PlantSimulator
from schemas.models import Reading

__all__ = [
    "ANOMALY_KINDS",
    "BATCH_READINGS",
    "CATALOGUE",
    "InjectedAnomaly",
    "MetricSpec",
    "PlantSimulator",
    "SeriesSpec",
    "SimulatorPartition",
    "SimulatorSnapshot",
    "SimulatorSource",
    "partition_devices",
    "partition_quota",
]

BATCH_READINGS = 1000
"""Readings per batch, about: whole steps while a step is smaller, else slices of a step."""

SimulatorSnapshot = tuple[int, int]
"""A partition's resume state: (next step, next column within that step)."""


def partition_devices(config: SimulatorSourceConfig, index: int) -> list[int]:
    """The devices partition ``index`` owns: ``index, index + P, index + 2P, ...``."""
    return list(range(index, config.devices, config.partitions))


def partition_quota(config: SimulatorSourceConfig, devices: list[int]) -> int | None:
    """How many readings a partition owning ``devices`` emits under ``config.limit``.

    The plant's first ``limit`` readings are steps ``0 .. K-1`` whole and the
    first ``r`` readings of step ``K`` (device-major); a partition emits its
    own share of them, so the partitions' quotas add up to ``limit``.
    """
    if config.limit is None:
        return None
    width = config.devices * config.metrics
    steps, rest = divmod(config.limit, width)
    whole, part = divmod(rest, config.metrics)  # devices < whole, then ``part`` of the next
    last_step = sum(config.metrics if d < whole else part if d == whole else 0 for d in devices)
    return steps * len(devices) * config.metrics + last_step


class SimulatorPartition(StatefulSourcePartition[Reading, SimulatorSnapshot]):
    """Some devices of the plant, generated step by step.

    Its snapshot is the position of the next reading, ``(step, column)``;
    as every value is a pure function of the seed and step, that is all a
    resume needs to continue exactly where it left off.
    """

    def __init__(
        self,
        config: SimulatorSourceConfig,
        devices: list[int],
        resume_state: SimulatorSnapshot | None = None,
    ) -> None:
        self._plant = PlantSimulator(config, devices)
        width = self._width = self._plant.width
        step, column = resume_state or (0, 0)
        self._position = step * width + min(column, width)
        self._stop = partition_quota(config, devices)
        # Whole steps per batch; 0 when one step is larger than a batch.
        self._whole_steps = BATCH_READINGS // width if width else 0
        # Pacing: step k is due ``(k - k_anchor) / steps_per_s`` after the anchor.
        plant_width = config.devices * config.metrics
        self._steps_per_s = config.rate / plant_width if config.rate > 0 else 0.0
        self._anchor_step = step
        self._anchor = time.monotonic()

    def next_batch(self) -> list[Reading]:
        """The next readings that are due: whole steps, or a slice of a large step."""
        pos, width = self._position, self._width
        if not width or (self._stop is not None and pos >= self._stop):
            raise StopIteration
        step, column = divmod(pos, width)
        if self._steps_per_s and step > self._due_step():
            return []
        if column == 0 and self._whole_steps:
            steps = self._whole_steps
            if self._steps_per_s:
                steps = max(1, min(steps, self._due_step() - step + 1))
            end = pos + steps * width
        else:
            end = min(pos + BATCH_READINGS, (step + 1) * width)
        if self._stop is not None:
            end = min(end, self._stop)
        batch = self._plant.readings_range(pos, end)
        self._position = end
        return batch

    def next_awake(self) -> datetime | None:
        """When the next step is due (``None``: now, or unpaced)."""
        if not self._steps_per_s or not self._width:
            return None
        if self._stop is not None and self._position >= self._stop:
            return None  # done: let next_batch end the partition now
        step = self._position // self._width
        wait = self._anchor + (step - self._anchor_step) / self._steps_per_s - time.monotonic()
        return None if wait <= 0 else datetime.now(UTC) + timedelta(seconds=wait)

    def snapshot(self) -> SimulatorSnapshot:
        """``(step, column)`` of the next reading."""
        if not self._width:
            return (0, 0)
        step, column = divmod(self._position, self._width)
        return (step, column)

    def _due_step(self) -> int:
        elapsed = time.monotonic() - self._anchor
        return self._anchor_step + int(elapsed * self._steps_per_s)


class SimulatorSource(FixedPartitionedSource[Reading, SimulatorSnapshot]):
    """The simulated plant as ``config.partitions`` resumable partitions of its devices.

    Partition ``sim-i`` owns devices ``i, i + P, ...`` (see
    :func:`partition_devices`); each emits its readings as
    :class:`~schemas.models.Reading` with ``source="simulator"`` and
    ``tenant=config.tenant``, paced to its share of ``config.rate``. With
    ``config.limit`` the partitions end (EOF) once the plant's first
    ``limit`` readings are out.
    """

    def __init__(self, config: SimulatorSourceConfig) -> None:
        self.config = config

    def list_parts(self) -> list[str]:
        """Every partition: any worker can generate any of them."""
        return [f"sim-{i}" for i in range(self.config.partitions)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: SimulatorSnapshot | None
    ) -> SimulatorPartition:
        """Build partition ``sim-i``, resuming from its snapshot if any."""
        index = int(for_part.removeprefix("sim-"))
        return SimulatorPartition(self.config, partition_devices(self.config, index), resume_state)
