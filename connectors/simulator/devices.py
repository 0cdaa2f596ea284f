"""What the simulated machines do over event time: run or stop, overheat, change mode.

>>> import numpy as np
>>> machines = DeviceModel(seed=42, devices=np.arange(3), interval_s=1.0, overheats_per_hour=3)
>>> machines.running(np.array([[0.0], [600.0]]), np.arange(3)).shape
(2, 3)
>>> all(kind in ("start", "stop") for _, _, kind in machines.switches(3600))
True

Time is cut into slots (``RUN_SLOT_S``, ``HEAT_SLOT_S``, ``MODE_SLOT_S``),
shifted by a random offset per device so the machines do not all switch
together; what a device does in a slot is a hash of (seed, device, slot).
Every method is elementwise over times ``t`` (event seconds since step 0)
and local device indices ``dev``, broadcast against each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from connectors.simulator import model as sm
from connectors.simulator.model import F64, I64

Bools = npt.NDArray[np.bool_]


class DeviceModel:
    """The machine behaviour of some devices (global indices ``devices``) of a seeded plant.

    ``overheats_per_hour`` (0..6) is the mean number of overheat episodes
    per device and hour: each ``HEAT_SLOT_S`` slot holds one with that
    probability, lasting 40-150 s and peaking at 83-92 °C, or at 97-104 °C
    (``HEAT_CRITICAL`` of them).
    """

    def __init__(
        self, seed: int, devices: I64, interval_s: float, overheats_per_hour: float
    ) -> None:
        self.interval_s = interval_s
        self._run_key = sm.counter_hash(sm.stream_key(seed, sm.RUN), devices)
        self._heat_key = sm.counter_hash(sm.stream_key(seed, sm.HEAT), devices)
        self._mode_key = sm.counter_hash(sm.stream_key(seed, sm.MODE), devices)
        param = sm.counter_hash(sm.stream_key(seed, sm.PARAM), devices)
        self._run_off = sm.bits(param, 4) * (sm.RUN_SLOT_S / 4096)
        self._heat_off = sm.bits(param, 16) * (sm.HEAT_SLOT_S / 4096)
        self._mode_off = sm.bits(param, 28) * (sm.MODE_SLOT_S / 4096)
        self._heat_p = round(min(1.0, overheats_per_hour * sm.HEAT_SLOT_S / 3600) * 4096)
        self._count = len(devices)

    def running(self, t: Any, dev: Any) -> Bools:
        """Whether the machines run."""
        slot = np.floor((t + self._run_off[dev]) / sm.RUN_SLOT_S)
        h = sm.counter_hash(self._run_key[dev], slot)
        return h < np.uint64(round(sm.P_RUNNING * 2.0**64))

    def heat(self, t: Any, dev: Any) -> tuple[F64, F64, Bools]:
        """(fraction 0..1 of an overheat episode, its peak °C, whether it is critical).

        An episode ramps up over a quarter of its duration, holds its peak
        for half and ramps down; temperatures move that fraction of the way
        from their normal value to the peak.
        """
        x = t + self._heat_off[dev]
        slot = np.floor(x / sm.HEAT_SLOT_S)
        occurs, dur, start, peak, critical = self._episodes(self._heat_key[dev], slot)
        y = (x - slot * sm.HEAT_SLOT_S) - start
        frac = np.clip(np.minimum(y, dur - y) / (dur * 0.25), 0.0, 1.0) * occurs
        return frac, peak, critical

    def mode(self, t: Any, dev: Any) -> I64:
        """Index into ``MODES``: auto most of the time, sometimes manual, rarely maintenance."""
        x = t + self._mode_off[dev]
        u = sm.unit_float(sm.counter_hash(self._mode_key[dev], np.floor(x / sm.MODE_SLOT_S)))
        return (u >= 0.85).astype(np.int64) + (u >= 0.97)

    def switches(self, steps: int) -> list[tuple[int, int, str]]:
        """(device, step, ``start`` or ``stop``) of every machine switch in steps 1 .. steps-1."""
        iv = self.interval_s
        n_slots = int(((steps - 1) * iv + sm.RUN_SLOT_S) // sm.RUN_SLOT_S) + 1
        dev, slot = np.meshgrid(np.arange(self._count), np.arange(1, n_slots + 1), indexing="ij")
        # The first step of each slot; float rounding fixed up with running()'s own expression.
        k = np.ceil((slot * sm.RUN_SLOT_S - self._run_off[dev]) / iv).astype(np.int64)
        k -= np.floor(((k - 1) * iv + self._run_off[dev]) / sm.RUN_SLOT_S) >= slot
        k += np.floor((k * iv + self._run_off[dev]) / sm.RUN_SLOT_S) < slot
        ok = (k > 0) & (k < steps)
        # Several slots share a first step when interval_s > RUN_SLOT_S.
        dev, k = np.unique(np.stack([dev[ok], k[ok]]), axis=1)
        on = self.running(k * iv, dev)
        changed = on != self.running((k - 1) * iv, dev)
        return [
            (d, s, "start" if o else "stop")
            for d, s, o in zip(
                dev[changed].tolist(), k[changed].tolist(), on[changed].tolist(), strict=True
            )
        ]

    def overheats(self, steps: int) -> list[tuple[int, int, int, float]]:
        """(device, first step, last step, peak °C) of the overheat episodes in 0 .. steps-1."""
        iv = self.interval_s
        n_slots = int(((steps - 1) * iv + sm.HEAT_SLOT_S) // sm.HEAT_SLOT_S) + 1
        dev, slot = np.meshgrid(np.arange(self._count), np.arange(n_slots), indexing="ij")
        occurs, dur, st, peak, _ = self._episodes(self._heat_key[dev], slot)
        dev, slot, dur, st, peak = dev[occurs], slot[occurs], dur[occurs], st[occurs], peak[occurs]
        begin = slot * sm.HEAT_SLOT_S + st - self._heat_off[dev]
        first = np.floor(begin / iv).astype(np.int64) + 1
        last = np.ceil((begin + dur) / iv).astype(np.int64) - 1
        # Fix float rounding up by a step, with the very expression the values use.
        first -= self.heat((first - 1) * iv, dev)[0] > 0
        first += self.heat(first * iv, dev)[0] <= 0
        last += self.heat((last + 1) * iv, dev)[0] > 0
        last -= self.heat(last * iv, dev)[0] <= 0
        keep = (first <= last) & (first < steps) & (last >= 0)
        return [
            (d, max(a, 0), min(b, steps - 1), p)
            for d, a, b, p in zip(
                dev[keep].tolist(),
                first[keep].tolist(),
                last[keep].tolist(),
                peak[keep].tolist(),
                strict=True,
            )
        ]

    def _episodes(self, key: Any, slot: Any) -> tuple[npt.NDArray[Any], ...]:
        """(occurs, duration s, start s in the slot, peak °C, critical) of heat slots."""
        h = sm.counter_hash(key, slot)
        occurs = sm.bits(h, 52) < self._heat_p
        dur = 40.0 + sm.bits(h, 40) * (110.0 / 4096)
        start = sm.bits(h, 28) * ((sm.HEAT_SLOT_S - dur) / 4096)
        critical = sm.bits(h, 16) < round(sm.HEAT_CRITICAL * 4096)
        level = sm.bits(h, 4)
        peak = np.where(critical, 97.0 + level * (7.0 / 4096), 83.0 + level * (9.0 / 4096))
        return occurs, dur, start, peak, critical
