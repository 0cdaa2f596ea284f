"""What the simulated plant is made of: its metric catalogue, records and hash.

>>> [spec.name for spec in CATALOGUE[:5]]
['temperature', 'pressure', 'vibration', 'power', 'state.running']
>>> metric_name(16), device_name(7, 10)
('temperature_2', 'dev-007')

:class:`connectors.simulator.plant.PlantSimulator` generates the values;
this module holds the parts that do not change while it runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from schemas.models import RecordKind

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

AnomalyKind = Literal["spike", "level_shift", "drift", "stuck"]
ANOMALY_KINDS: tuple[AnomalyKind, ...] = ("spike", "level_shift", "drift", "stuck")
"""Injected anomaly kinds, in the order the schedule's 2-bit kind field indexes them."""

ExcursionKind = Literal["overheat", "start", "stop"]
Signal = Literal["analog", "running", "overheat", "mode", "log"]
ValueType = Literal["float", "bool", "str"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One behaviour of the catalogue. Numbers apply to ``analog`` (float) metrics.

    The value is ``base + on_delta * running + daily cycle + process cycle +
    noise``; ``noise`` is the standard deviation when stopped, ``on_noise``
    when running (``None``: the same). ``jitter`` spreads ``base`` between
    series (uniform, +-). ``scale`` is the unit of injected anomaly
    magnitudes; ``nonneg`` metrics only get upward anomalies. ``overheat``
    metrics follow the device's overheat episodes. The other signals are a
    bool or str derived from the device's state: ``running`` (machine on),
    ``overheat`` (the device's overheat protection bit), ``mode`` and ``log``.
    """

    name: str
    unit: str | None
    signal: Signal = "analog"
    base: float = 0.0
    on_delta: float = 0.0
    noise: float = 0.0
    on_noise: float | None = None
    daily: float = 0.0
    cycle: float = 0.0
    jitter: float = 0.0
    scale: float = 1.0
    nonneg: bool = False
    decimals: int = 3
    overheat: bool = False

    @property
    def value_type(self) -> ValueType:
        """The Python type of this metric's values."""
        if self.signal == "analog":
            return "float"
        return "str" if self.signal in ("mode", "log") else "bool"


CATALOGUE: tuple[MetricSpec, ...] = (
    MetricSpec("temperature", "°C", base=65, jitter=2, daily=2.5, cycle=1.5, noise=0.4,
               scale=4, overheat=True),
    MetricSpec("pressure", "bar", base=6.0, jitter=0.3, on_delta=0.4, cycle=0.15, noise=0.03,
               on_noise=0.05, scale=0.4),
    MetricSpec("vibration", "mm/s", base=0.5, jitter=0.1, on_delta=2.3, noise=0.05,
               on_noise=0.2, scale=1.0, nonneg=True),
    MetricSpec("power", "kW", base=0.4, jitter=0.05, on_delta=49.6, noise=0.04, on_noise=1.0,
               scale=8, nonneg=True),
    MetricSpec("state.running", None, signal="running"),
    MetricSpec("flow", "m3/h", base=2.0, jitter=0.3, on_delta=118, noise=0.15, on_noise=2.0,
               scale=15, nonneg=True),
    MetricSpec("humidity", "%", base=45, jitter=5, daily=8, cycle=1, noise=0.5, scale=5),
    MetricSpec("current", "A", base=1.2, jitter=0.1, on_delta=83.8, noise=0.08, on_noise=1.5,
               scale=12, nonneg=True),
    MetricSpec("voltage", "V", base=400, jitter=3, cycle=1, noise=1.2, scale=10),
    MetricSpec("speed", "rpm", base=60, jitter=5, on_delta=1420, noise=2, on_noise=5,
               scale=150, nonneg=True),
    MetricSpec("level", "%", base=55, jitter=10, cycle=20, noise=0.3, scale=8),
    MetricSpec("ph", "pH", base=7.0, jitter=0.3, daily=0.1, noise=0.02, scale=0.5),
    MetricSpec("torque", "N·m", base=5, jitter=0.5, on_delta=175, noise=0.4, on_noise=3,
               scale=25, nonneg=True),
    MetricSpec("state.mode", None, signal="mode"),
    MetricSpec("alarm.overheat", None, signal="overheat"),
    MetricSpec("log.message", None, signal="log"),
)  # fmt: skip
"""The metric behaviours, cycled per device; the first five make the default plant."""

# Event-time scales of the device behaviours, in seconds.
RUN_SLOT_S = 180.0  # a machine may start or stop every 3 minutes
P_RUNNING = 0.7  # share of slots a machine runs: runs last ~10 min, stops ~4 min
HEAT_SLOT_S = 600.0  # at most one overheat episode per 10 minutes per device
HEAT_CRITICAL = 0.3  # share of overheat episodes that peak above 95 °C
MODE_SLOT_S = 900.0
CYCLE_S = 1200.0  # period of the process cycle
DAY_S = 86400.0
DAILY_PEAK_S = 16 * 3600.0  # the daily cycle peaks at 16:00 UTC
ANOMALY_BLOCK = 1000  # steps; at most one injected anomaly per block per series

# (shortest, longest) duration in steps and (least, most) magnitude in units of
# MetricSpec.scale, per ANOMALY_KINDS entry.
DURATIONS = np.array([(1, 1), (30, 200), (150, 600), (30, 300)], dtype=np.int64)
MAGNITUDES = np.array([(6.0, 10.0), (3.0, 6.0), (4.0, 8.0), (0.0, 0.0)])
MODES = np.array(["auto", "manual", "maintenance"], dtype=object)
LOG_LINES = np.array(
    ["motor stopped", "motor running", "temperature critical: overheat protection active"],
    dtype=object,
)
SIGNAL_CODE = {"analog": 0, "running": 1, "overheat": 2, "mode": 3, "log": 4}
_KIND_BY_PREFIX: tuple[tuple[str, RecordKind], ...] = (
    ("log.", "log"),
    ("alarm.", "alarm"),
    ("state.", "event"),
)


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """One series of the plant; ``kind`` is how the default classification rules see it."""

    device: str
    metric: str
    unit: str | None
    kind: RecordKind
    value_type: ValueType


@dataclass(frozen=True, slots=True)
class InjectedAnomaly:
    """A window of one series the simulator made abnormal on purpose (the ground truth).

    ``start`` and ``end`` are the timestamps of the first and the last
    affected reading (inclusive; equal for a spike), ``start_step`` and
    ``end_step`` their step indices. ``magnitude`` is the largest offset
    added, in the metric's unit (signed; 0 for ``stuck``, whose readings all
    repeat the value the series had at ``start``). Excursions
    (``PlantSimulator.excursions``) reuse this record with kind
    ``overheat`` (``magnitude``: peak °C), ``start`` or ``stop``.
    """

    device: str
    metric: str
    kind: AnomalyKind | ExcursionKind
    start: datetime
    end: datetime
    start_step: int
    end_step: int
    magnitude: float = 0.0


def device_name(index: int, devices: int) -> str:
    """The name of device ``index`` in a plant of ``devices`` devices (``dev-007``)."""
    return f"dev-{index:0{max(3, len(str(devices - 1)))}d}"


def metric_spec(index: int) -> MetricSpec:
    """The behaviour of a device's metric ``index``."""
    return CATALOGUE[index % len(CATALOGUE)]


def metric_name(index: int) -> str:
    """The name of a device's metric ``index`` (``temperature``, ..., ``temperature_2``)."""
    cycle = index // len(CATALOGUE)
    name = metric_spec(index).name
    return name if cycle == 0 else f"{name}_{cycle + 1}"


def record_kind(metric: str) -> RecordKind:
    """How the default classification rules classify a metric."""
    for prefix, kind in _KIND_BY_PREFIX:
        if metric.startswith(prefix):
            return kind
    return "telemetry"


# ---------------------------------------------------------------- counter-based hash
# Values are pure functions of (seed, device, metric, step): each random draw
# hashes its coordinates with splitmix64 instead of advancing a generator.

MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
NOISE, RUN, HEAT, MODE, ANOMALY, PARAM = range(1, 7)
"""Independent random streams, mixed into the seed."""

SQRT3_16 = math.sqrt(3.0) / 65536.0


def mix_int(x: int) -> int:
    """splitmix64's finaliser of one Python integer (taken modulo 2**64)."""
    x &= MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def stream_key(seed: int, stream: int) -> int:
    """The key of one random stream of a seed."""
    return mix_int(mix_int(seed) + stream * GAMMA)


def mix(x: U64) -> U64:
    """splitmix64's finaliser, elementwise (returns a new array)."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def counter_hash(keys: Any, counters: Any) -> U64:
    """The hash of each (key, counter) pair, broadcast; counters are integers >= 0."""
    # At least 1-d: numpy warns on overflow of 0-d values but wraps arrays silently.
    c = np.atleast_1d(np.asarray(counters).astype(np.uint64))
    return mix(np.asarray(keys, dtype=np.uint64) + (c + np.uint64(1)) * np.uint64(GAMMA))


def unit_float(h: U64) -> F64:
    """Uniform floats in [0, 1) from hashes (their top 53 bits)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def bits(h: U64, shift: int, width: int = 12) -> I64:
    """``width`` bits of each hash from bit ``shift`` on, as integers."""
    return ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)


def gaussian(h: U64) -> F64:
    """Approximately standard normal floats from hashes, bounded at +-3.46.

    Irwin-Hall: the sum of the hash's four 16-bit fields, centred and scaled.
    The bound keeps normal noise far from injected spikes.
    """
    lanes = np.uint64(0xFFFF0000FFFF)
    pairs = (h & lanes) + ((h >> np.uint64(16)) & lanes)
    total = (pairs & np.uint64(0xFFFFFFFF)) + (pairs >> np.uint64(32))
    return (total.astype(np.float64) - 131070.0) * SQRT3_16
