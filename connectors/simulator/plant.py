"""The simulated plant: a pure function from (seed, config, step) to readings.

>>> from datetime import datetime, timezone
>>> from connectors.simulator.config import SimulatorSourceConfig
>>> start = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> plant = PlantSimulator(SimulatorSourceConfig(devices=2, metrics=5, start=start))
>>> [(r.device, r.metric, r.unit) for r in plant.step_readings(0)][:2]
[('dev-000', 'temperature', '°C'), ('dev-000', 'pressure', 'bar')]
>>> plant.step_readings(7) == PlantSimulator(plant.config).step_readings(7)
True
>>> sorted({a.kind for a in plant.ground_truth(200_000)})
['drift', 'level_shift', 'spike', 'stuck']

Device ``d`` has ``config.metrics`` series; series ``j`` behaves like
``CATALOGUE[j % len(CATALOGUE)]`` (see :mod:`connectors.simulator.model`).
Machines start and stop every few minutes (``state.running``; ``power``,
``vibration``, ``flow``... follow), temperatures follow the time of day and
now and then overheat, and numeric series get rare injected anomalies.

No state advances: every random draw is a hash of its coordinates, so any
step can be generated alone, a partition owning some devices produces
exactly the whole plant's readings for them, and resuming needs only the
position. Arithmetic is numpy elementwise ``+ - * /`` and sines are taken
per step with :mod:`math`, so the bits do not depend on array shapes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from connectors.simulator import model as sm
from connectors.simulator.config import SimulatorSourceConfig
from connectors.simulator.devices import DeviceModel
from connectors.simulator.model import F64, I64, InjectedAnomaly, SeriesSpec
from schemas.models import Reading

Schedule = tuple[I64, I64, I64, I64, F64]
"""(series positions, kind index, start step, duration in steps, magnitude) of a block."""
Window = tuple[I64, I64, I64, I64, F64, F64]
"""A schedule plus the value each stuck anomaly repeats."""


@dataclass(slots=True)
class _Layout:
    """How the columns ``lo .. hi-1`` of a step are computed (cached per range)."""

    dlo: int  # first local device of the range
    ndev: int  # devices the range touches
    analog: I64  # positions of analog columns in the range
    nid: I64  # their analog series ids
    dev: I64  # their device, relative to dlo
    params: tuple[F64, ...]  # base, on_delta, 4 cycle terms, sigma off, sigma delta, factor
    noise_key: npt.NDArray[np.uint64]
    hot: I64  # positions among ``analog`` of overheat-following columns
    other: I64  # positions of bool / str columns
    other_dev: I64
    other_signal: I64
    strings: bool  # any mode or log column
    meta: tuple[list[str], list[str], list[str | None]]  # device, metric, unit per column
    chunk_steps: int  # steps of device state computed at once
    chunk: tuple[int, _DeviceState] | None = None  # the last chunk computed
    schedules: dict[int, Window] = field(default_factory=dict)


@dataclass(slots=True)
class _DeviceState:
    """Per step (rows) and device (columns): what the device does; ``trig`` per step."""

    running: F64  # 1.0 while the machine runs
    heat: F64  # overheat episode fraction, 0..1
    peak: F64  # the episode's peak temperature
    alarm: npt.NDArray[np.bool_]  # overheat protection bit
    mode: I64  # index into MODES
    trig: F64  # sin, cos of the daily cycle; sin, cos of the process cycle (4 columns)

    def rows(self, rows: slice) -> _DeviceState:
        return _DeviceState(*(getattr(self, f)[rows] for f in self.__slots__))

    @staticmethod
    def concat(parts: list[_DeviceState]) -> _DeviceState:
        fields = _DeviceState.__slots__
        return _DeviceState(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


class PlantSimulator:
    """A seeded plant of ``config.devices`` x ``config.metrics`` series, or some of its devices.

    ``devices`` (global device indices, increasing) restricts the simulator
    to those devices, as a Bytewax partition does. Step ``k`` holds one
    reading per series, device-major; its timestamp is ``config.start + k *
    interval_s`` in replay, the wall clock when generated otherwise. The
    *position* of a reading is ``step * width + column``.
    """

    def __init__(self, config: SimulatorSourceConfig, devices: Sequence[int] | None = None):
        self.config = config
        n_dev, n_met = config.devices, config.metrics
        dev = np.arange(n_dev, dtype=np.int64) if devices is None else np.asarray(devices, np.int64)
        if dev.size and (dev.min() < 0 or dev.max() >= n_dev or np.any(np.diff(dev) <= 0)):
            raise ValueError(f"devices must be increasing indices in [0, {n_dev})")
        self.devices: list[int] = dev.tolist()
        self.width = len(self.devices) * n_met
        """Readings per step."""
        self._interval_us = max(1, round(config.interval_s * 1e6))
        self._start = config.start.astimezone(UTC) if config.start is not None else None
        self._origin = self._start or datetime.now(UTC)
        self._t0 = self._start.timestamp() % sm.DAY_S if self._start is not None else 0.0
        self._last_live = datetime.min.replace(tzinfo=UTC)
        self._layouts: dict[tuple[int, int], _Layout] = {}

        names = [sm.device_name(d, n_dev) for d in self.devices]
        self._specs = [sm.metric_spec(j) for j in range(n_met)]
        self._col_device = [n for n in names for _ in range(n_met)]
        self._col_metric = [sm.metric_name(j) for j in range(n_met)] * len(names)
        self._col_unit = [s.unit for s in self._specs] * len(names)
        col_local = np.repeat(np.arange(len(names), dtype=np.int64), n_met)
        col_metric = np.tile(np.arange(n_met, dtype=np.int64), len(names))
        signal = np.array([sm.SIGNAL_CODE[s.signal] for s in self._specs], dtype=np.int64)
        self._col_signal = signal[col_metric]
        self._col_local = col_local
        analog = self._col_signal == 0
        self._col_num = np.cumsum(analog) - 1  # analog series id, where analog
        self._num_col = np.flatnonzero(analog)

        self._machines = DeviceModel(config.seed, dev, config.interval_s, config.overheats_per_hour)
        self._anomaly_p = round(config.anomaly_rate * sm.ANOMALY_BLOCK * 2.0**53)

        # Per analog series: parameters and keys (series = (device, metric) pair).
        nd, nm = col_local[analog], col_metric[analog]
        param = sm.counter_hash(sm.stream_key(config.seed, sm.PARAM), dev)
        noise = sm.counter_hash(sm.stream_key(config.seed, sm.NOISE), dev)
        anomaly = sm.counter_hash(sm.stream_key(config.seed, sm.ANOMALY), dev)
        series_param = sm.counter_hash(sm.mix(param[nd]), nm)
        self._noise_key = sm.counter_hash(noise[nd], nm)
        self._anomaly_key = sm.counter_hash(anomaly[nd], nm)

        def per_metric(value: Any) -> F64:
            return np.array([float(value(s)) for s in self._specs], dtype=np.float64)[nm]

        jitter = 2.0 * sm.bits(series_param, 4) / 4096 - 1.0
        sig_off = per_metric(lambda s: s.noise)
        sig_on = per_metric(lambda s: s.noise if s.on_noise is None else s.on_noise)
        # Phases through math, not np.cos, so every partition computes identical bits.
        shift = ((2.0 * sm.bits(series_param, 16) / 4096 - 1.0) * 0.3).tolist()  # about 16:00
        phase = (sm.bits(series_param, 28) * (2 * math.pi / 4096)).tolist()
        daily, cycle = per_metric(lambda s: s.daily), per_metric(lambda s: s.cycle)
        self._params: tuple[F64, ...] = (
            per_metric(lambda s: s.base) + jitter * per_metric(lambda s: s.jitter),
            per_metric(lambda s: s.on_delta),
            daily * np.array([math.cos(x) for x in shift]),
            daily * np.array([math.sin(x) for x in shift]),
            cycle * np.array([math.cos(x) for x in phase]),
            cycle * np.array([math.sin(x) for x in phase]),
            sig_off,
            sig_on - sig_off,
            per_metric(lambda s: 10.0**s.decimals),
        )
        self._hot = per_metric(lambda s: s.overheat) > 0
        self._scale = per_metric(lambda s: s.scale)
        self._nonneg = per_metric(lambda s: s.nonneg) > 0

    # ------------------------------------------------------------------ public API

    def series(self) -> list[SeriesSpec]:
        """Every series, in the order of a step's readings."""
        n_met = self.config.metrics
        return [
            SeriesSpec(d, m, u, sm.record_kind(m), self._specs[i % n_met].value_type)
            for i, (d, m, u) in enumerate(
                zip(self._col_device, self._col_metric, self._col_unit, strict=True)
            )
        ]

    def timestamp(self, step: int) -> datetime:
        """Event time of a step: exact in replay; live, an estimate (start + step * interval)."""
        return self._origin + timedelta(microseconds=step * self._interval_us)

    def step_readings(self, step: int) -> list[Reading]:
        """All readings of one step (a pure function of the seed, config and step)."""
        return self._frame(step, 1, 0, self.width)

    def readings(self, limit: int | None = None, first_step: int = 0) -> Iterator[Reading]:
        """Readings from ``first_step`` on, unpaced: ``limit`` of them, or forever."""
        position = first_step * self.width
        chunk = max(1, 4096 // max(1, self.width)) * self.width
        while self.width and (limit is None or limit > 0):
            stop = position + (chunk if limit is None else min(chunk, limit))
            batch = self.readings_range(position, stop)
            yield from batch
            position = stop
            if limit is not None:
                limit -= len(batch)

    def readings_range(self, start: int, stop: int) -> list[Reading]:
        """The readings at positions ``start`` (inclusive) to ``stop`` (exclusive)."""
        if stop <= start or not self.width:
            return []
        w = self.width
        first, last = start // w, (stop - 1) // w
        if first == last:
            return self._frame(first, 1, start - first * w, stop - first * w)
        return self._frame(first, last - first + 1, 0, w)[start - first * w : stop - first * w]

    def ground_truth(self, steps: int) -> list[InjectedAnomaly]:
        """The anomalies injected in steps ``0 .. steps-1`` (ends clipped to the range).

        Sorted by start step, then series order. Empty when ``config.anomalies`` is off.
        """
        if not self.config.anomalies or steps <= 0 or not self._num_col.size:
            return []
        found = []
        nid = np.arange(self._num_col.size)
        for block in range((steps - 1) // sm.ANOMALY_BLOCK + 1):
            sel, kind, start, dur, mag = self._schedule(block, nid)
            for i, k, s, d, m in zip(
                sel.tolist(), kind.tolist(), start.tolist(), dur.tolist(), mag.tolist(), strict=True
            ):
                if s < steps:
                    found.append((s, i, sm.ANOMALY_KINDS[k], min(s + d - 1, steps - 1), m))
        found.sort(key=lambda a: (a[0], a[1]))
        return [self._record(int(self._num_col[i]), kind, s, e, m) for s, i, kind, e, m in found]

    def excursions(self, steps: int) -> list[InjectedAnomaly]:
        """Normal but abrupt process changes in steps ``0 .. steps-1``, sorted by start step.

        ``overheat`` windows, one per temperature series (they raise the
        ``high_temperature`` alarm), and machine ``start`` / ``stop``
        steps (metric ``state.running``; ``power``, ``vibration``, ``flow``,
        ``current``, ``speed``, ``torque`` jump there). An evaluation of an
        anomaly detector should not count detections there as false alarms.
        """
        if steps <= 0 or not self.devices:
            return []
        found = [
            self._event(d, "state.running", kind, s, s, 0.0)
            for d, s, kind in self._machines.switches(steps)
        ]
        temps = [sm.metric_name(j) for j, s in enumerate(self._specs) if s.overheat]
        found += [
            self._event(d, metric, "overheat", first, last, peak)
            for d, first, last, peak in self._machines.overheats(steps)
            for metric in temps
        ]
        found.sort(key=lambda a: (a.start_step, a.device, a.metric))
        return found

    # ------------------------------------------------------------------ values

    def _layout(self, lo: int, hi: int, chunk_steps: int = 0) -> _Layout:
        """The layout of columns ``lo .. hi-1`` (cached unless ``chunk_steps`` is given:
        then its device state is computed ``chunk_steps`` steps at a time)."""
        layout = None if chunk_steps else self._layouts.get((lo, hi))
        if layout is not None:
            return layout
        if len(self._layouts) >= 1024:
            self._layouts.clear()
        signal, local = self._col_signal[lo:hi], self._col_local[lo:hi]
        dlo = int(local[0])
        analog, other = np.flatnonzero(signal == 0), np.flatnonzero(signal != 0)
        nid = self._col_num[lo:hi][analog]
        layout = _Layout(
            dlo=dlo,
            ndev=int(local[-1]) - dlo + 1,
            analog=analog,
            nid=nid,
            dev=local[analog] - dlo,
            params=tuple(p[nid] for p in self._params),
            noise_key=self._noise_key[nid],
            hot=np.flatnonzero(self._hot[nid]),
            other=other,
            other_dev=local[other] - dlo,
            other_signal=signal[other],
            strings=bool(np.any(signal[other] >= 3)),
            chunk_steps=chunk_steps or max(1, min(256, 32768 // (int(local[-1]) - dlo + 1))),
            meta=(self._col_device[lo:hi], self._col_metric[lo:hi], self._col_unit[lo:hi]),
        )
        if not chunk_steps:
            self._layouts[(lo, hi)] = layout
        return layout

    def _frame(self, k0: int, n: int, lo: int, hi: int) -> list[Reading]:
        """Readings of steps ``k0 .. k0+n-1``, columns ``lo .. hi-1`` of each."""
        if hi <= lo or n <= 0:
            return []
        layout = self._layout(lo, hi)
        values = self._values(layout, range(k0, k0 + n), self.config.anomalies)
        if self._start is not None:
            start, iv = self._start, self._interval_us
            stamps = [start + timedelta(microseconds=k * iv) for k in range(k0, k0 + n)]
        else:
            stamps = [self._live_now() for _ in range(n)]
        dn, mn, un = layout.meta
        tenant, good, source = repeat(self.config.tenant), repeat("good"), repeat("simulator")
        out: list[Reading] = []
        for row, ts in zip(values.tolist(), stamps, strict=True):
            # map() builds the readings without a Python-level loop body, which is faster.
            out += map(Reading, dn, mn, repeat(ts), row, tenant, good, source, un)
        return out

    def _values(self, layout: _Layout, steps: range, anomalies: bool) -> npt.NDArray[Any]:
        """Values (steps x the layout's columns) as an object array of Python values."""
        state = self._device_state(layout, steps)
        out = np.empty((len(steps), len(layout.meta[0])), dtype=object)
        if layout.analog.size:
            out[:, layout.analog] = self._analog(layout, steps, state, anomalies)
        if layout.other.size:
            dev, sig = layout.other_dev, layout.other_signal
            on, alarm = state.running[:, dev] > 0, state.alarm[:, dev]
            values = np.where(sig == 1, on, alarm).astype(object)
            if layout.strings:
                log = sm.LOG_LINES[np.where(alarm, 2, on.astype(np.int64))]
                mode = sm.MODES[state.mode[:, dev]]
                values = np.where(sig == 3, mode, np.where(sig == 4, log, values))
            out[:, layout.other] = values
        return out

    def _device_state(self, layout: _Layout, steps: range) -> _DeviceState:
        """The layout's devices' state at ``steps``, from chunks of steps cached in the layout."""
        size = layout.chunk_steps
        first, last = steps.start // size, (steps.stop - 1) // size
        chunks = []
        for index in range(first, last + 1):
            if layout.chunk is None or layout.chunk[0] != index:
                layout.chunk = (index, self._compute_state(layout, index * size, size))
            chunks.append(layout.chunk[1])
        offset = steps.start - first * size
        rows = slice(offset, offset + len(steps))
        if len(chunks) == 1:
            return chunks[0].rows(rows)
        return _DeviceState.concat(chunks).rows(rows)

    def _compute_state(self, layout: _Layout, k0: int, n: int) -> _DeviceState:
        iv = self.config.interval_s
        t_list = [k * iv for k in range(k0, k0 + n)]
        t = np.array(t_list)[:, None]
        devs = np.arange(layout.dlo, layout.dlo + layout.ndev)
        frac, peak, critical = self._machines.heat(t, devs)
        day = [
            2 * math.pi * ((self._t0 + x - sm.DAILY_PEAK_S) / sm.DAY_S) + math.pi / 2
            for x in t_list
        ]
        cyc = [2 * math.pi * (x / sm.CYCLE_S) for x in t_list]
        return _DeviceState(
            running=self._machines.running(t, devs).astype(np.float64),
            heat=frac,
            peak=peak,
            alarm=critical & (frac >= 1.0),
            mode=self._machines.mode(t, devs),
            trig=np.array(
                [
                    [math.sin(a) for a in day],
                    [math.cos(a) for a in day],
                    [math.sin(a) for a in cyc],
                    [math.cos(a) for a in cyc],
                ]
            ).T,
        )

    def _analog(self, layout: _Layout, steps: range, state: _DeviceState, anomalies: bool) -> F64:
        """Analog values (steps x analog columns): rounded, with anomalies if asked."""
        base, on_delta, daily_c, daily_s, cycle_c, cycle_s, sig_off, sig_delta, factor = (
            layout.params
        )
        trig = state.trig
        run = state.running[:, layout.dev]
        v = base + run * on_delta
        v += trig[:, 0:1] * daily_c
        v += trig[:, 1:2] * daily_s
        v += trig[:, 2:3] * cycle_c
        v += trig[:, 3:4] * cycle_s
        if layout.hot.size:
            hot_dev = layout.dev[layout.hot]
            frac, peak = state.heat[:, hot_dev], state.peak[:, hot_dev]
            v[:, layout.hot] += frac * (peak - v[:, layout.hot])
        counters = np.arange(steps.start, steps.stop)[:, None]
        v += (sig_off + run * sig_delta) * sm.gaussian(sm.counter_hash(layout.noise_key, counters))
        windows = self._windows(layout, steps) if anomalies else []
        inside = []
        for sel, kind, start, dur, mag, _ in windows:
            within = (counters >= start) & (counters < start + dur)
            inside.append(within)
            # Spikes and level shifts add ``mag``; a drift ramps up to it on its last step.
            offset = np.where(kind == 2, (counters - start + 1) * (mag / dur), mag)
            v[:, sel] += np.where(within & (kind != 3), offset, 0.0)
        v = np.rint(v * factor) / factor
        for (sel, kind, _, _, _, frozen), within in zip(windows, inside, strict=True):
            if np.any(kind == 3):
                v[:, sel] = np.where(within & (kind == 3), frozen, v[:, sel])
        return v

    def _normal_value(self, nid: int, step: int) -> float:
        """The anomaly-free value of analog series ``nid`` at ``step`` (a stuck sensor's)."""
        col = int(self._num_col[nid])
        # One step of one column: a layout of its own, uncached, whose device
        # state is computed for that step alone (the default chunk would be
        # 256 steps, and caching it would evict the layouts of whole batches).
        layout = self._layout(col, col + 1, chunk_steps=1)
        return float(self._values(layout, range(step, step + 1), False)[0, 0])

    # ------------------------------------------------------------------ anomalies

    def _schedule(self, block: int, nid: I64) -> Schedule:
        """The anomalies of analog series ``nid`` in one block of ``ANOMALY_BLOCK`` steps.

        At most one per series and block, wholly inside the block, so a step's
        anomalies depend on its block alone.
        """
        h = sm.counter_hash(self._anomaly_key[nid], block)
        sel = np.flatnonzero((h >> np.uint64(11)) < np.uint64(self._anomaly_p))
        h = sm.mix(h[sel])
        kind = sm.bits(h, 0, 2)
        lo, hi = sm.DURATIONS[kind, 0], sm.DURATIONS[kind, 1]
        dur = lo + ((sm.bits(h, 2, 16) * (hi - lo + 1)) >> 16)
        offset = (sm.bits(h, 18, 16) * (sm.ANOMALY_BLOCK - dur + 1)) >> 16
        size = sm.MAGNITUDES[kind, 0] + sm.bits(h, 34, 16) / 65536.0 * (
            sm.MAGNITUDES[kind, 1] - sm.MAGNITUDES[kind, 0]
        )
        up = self._nonneg[nid[sel]] | (sm.bits(h, 50, 1) == 0)
        mag = np.where(up, 1.0, -1.0) * size * self._scale[nid[sel]]
        return sel, kind, block * sm.ANOMALY_BLOCK + offset, dur, mag

    def _windows(self, layout: _Layout, steps: range) -> list[Window]:
        """The anomalies of the layout's analog columns that overlap ``steps``, per block."""
        windows = []
        k0, k1 = steps.start, steps.stop
        for block in range(k0 // sm.ANOMALY_BLOCK, (k1 - 1) // sm.ANOMALY_BLOCK + 1):
            window = layout.schedules.get(block)
            if window is None:
                if len(layout.schedules) >= 4:
                    layout.schedules.clear()
                sel, kind, start, dur, mag = self._schedule(block, layout.nid)
                frozen = np.array(
                    [
                        self._normal_value(int(layout.nid[c]), s) if k == 3 else 0.0
                        for c, k, s in zip(sel.tolist(), kind.tolist(), start.tolist(), strict=True)
                    ]
                )
                window = layout.schedules[block] = (sel, kind, start, dur, mag, frozen)
            sel, kind, start, dur, mag, frozen = window
            now = np.flatnonzero((start < k1) & (start + dur > k0))
            if now.size:
                windows.append((sel[now], kind[now], start[now], dur[now], mag[now], frozen[now]))
        return windows

    # ------------------------------------------------------------------ helpers

    def _live_now(self) -> datetime:
        """The wall clock, strictly increasing so a series never repeats a timestamp."""
        now = datetime.now(UTC)
        if now <= self._last_live:
            now = self._last_live + timedelta(microseconds=1)
        self._last_live = now
        return now

    def _record(self, col: int, kind: Any, start: int, end: int, mag: float) -> InjectedAnomaly:
        return InjectedAnomaly(
            self._col_device[col],
            self._col_metric[col],
            kind,
            self.timestamp(start),
            self.timestamp(end),
            start,
            end,
            mag,
        )

    def _event(
        self, local: int, metric: str, kind: Any, start: int, end: int, mag: float
    ) -> InjectedAnomaly:
        name = self._col_device[local * self.config.metrics]
        return InjectedAnomaly(
            name, metric, kind, self.timestamp(start), self.timestamp(end), start, end, mag
        )
