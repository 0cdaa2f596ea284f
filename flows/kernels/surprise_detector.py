"""The core of StreamForge's default anomaly detector (see :mod:`flows.anomaly`).

>>> det = SurpriseKernel()
>>> for i in range(300):
...     _ = det.score_learn_one(float(i), 10.0 + (i % 7) * 0.1)
>>> det.score_learn_one(300.0, 10.3) < 0.5, det.score_learn_one(301.0, 25.0) > 0.9
(True, True)

Plain Python, compiled by Cython with the C types of ``surprise_detector.pxd``
where a compiler is at hand (setup.py); both builds give the same scores
(``tests/unit/test_compiled.py``). :class:`flows.anomaly.SurpriseDetector`
adds river's ``AnomalyDetector`` verbs on top of this class.

The method, per value:

1. **Deviations**, each in units of its own learned typical size (robust
   EWMAs) and divided by an alarm level (at least 6; higher on heavy-tailed
   series, extrapolated from a running 99th percentile and median of the
   ratio): *spike* (the value vs the short-term level), *shift* (short- and
   mid-term level vs the slow level), *drift* (the slow level vs its very slow
   anchor), *volatility* (recent residuals vs the noise, alarm level 4) and
   *stuck* (a run of identical values that the series' repeat rate makes
   unlikely, e^-12, and over twice the longest normal run it has had).
2. **Seen it before**: a count table of 384 bytes remembers the *jumps* (the
   previous value's coarse level, and the step's size and sign on a
   half-octave scale) and the *levels* (visits of the short-term level to a
   fine bucket, 1/50 of the range of the values) that the series has shown.
   A deviation of a familiar kind is discounted (jumps: by ``1 / (1 +
   count)^2``, neighbouring cells counting half; levels: ``1 / (1 + count /
   4)^2``): a recurring pattern, such as the flat stretch or the level change
   of an on/off cycle, a machine start or a usual ramp, stops being anomalous
   after it was seen a few times, and a new level that persists becomes
   familiar within tens of values. The levels are remembered 8 values late,
   which makes one more test possible, *new level*: the short-term level,
   3 values in a row, where it never was (beyond twice the noise, and twice
   what it usually moves in 8 values, from any remembered level). The table
   is halved every 8,192 values.
   This is the "seen before" idea of CAD OSE and of HTM's learned sequences,
   reduced to the two questions that matter for a single sensor.
3. **Habituation** (as the anomaly likelihood of Ahmad et al. 2017 does by
   comparing recent scores with their history): after a reported deviation,
   the next ones are divided by 1.5 times a reference that keeps its size
   while the condition lasts and decays by 0.5 % per value after it. The
   score rises at the onset of a change (two values in a row, enough for an
   alarm's ``hold``), then stays under the alarm threshold while the
   condition persists (at 0.7 while the deviation stays above its alarm
   level: over the alarm's clear threshold, 0.5, so an alarm raised stays
   raised); a condition that grows 1.5-fold is news again. What
   is not reported teaches the scales (what persists, winsorised harder), so
   a lasting change becomes the new normal; the first ``warmup`` values (300,
   five minutes at 1 Hz) are scored with confidence growing from 0, and the
   new-level test starts after as many more.

The units are capped at 1.5 and the score is ``1 - 10 ** -(units ** 4)``
(:func:`alarm_units_to_score`): 0.9 at one unit, 0.99 at 1.19.
Cost: about 0.5 µs per value compiled, 5 µs as Python
(``tests/bench/bench_detectors.py`` measures it); pickled state about 700
bytes. Quality: ``tests/bench/bench_detectors.py`` (SKAB, the simulator's
ground truth, NAB-like series, NAB-style score).
"""

from __future__ import annotations

from datetime import datetime
from math import exp, floor, log
from typing import Any

_LN10 = log(10.0)
_LN2 = log(2.0)

SPIKE_AT = 6.0  # alarm levels, in units of each deviation's mean absolute size (at least)
SHIFT_AT = 6.0
DRIFT_AT = 6.0
MID_AT = 6.0
VOL_AT = 4.0
UNITS_CAP = 1.5  # reported at most (a score of 0.99999): escalations stay few
STUCK_AT = 12.0  # nats: a run of repeats with about e^-12 chance of being noise
CAP = 4.0  # deviations count at most this many alarm units (before familiarity)
FAST = 0.3  # learning rates per value: short-term level
MID = 0.1  # mid-term level
VOL = 0.1  # short-term volatility
SLOW = 0.02  # slow level
ANCHOR = 0.002  # anchor (the slow level's own slow level)
SCALE = 0.01  # noise, shift and spread scales
WANDER = 0.002  # the slow level's wander
REPEAT = 0.01  # repeat probability
Q_UP = 1.03  # running 99th percentile and median (see RegimeDetector)
Q99_DOWN = 1.0 - (1.03 - 1.0) / 99.0
Q50_UP = 1.03
Q50_DOWN = 1.0 / 1.03
LEARN = 0.84  # values under this many units (score < 0.5) teach the scales
REF_KEEP = 0.995  # habituation: the reference's decay per value
REF_MARGIN = 1.5  # a deviation reports only what exceeds 1.5 x the reference
HELD = 0.85  # units reported while a condition that was news persists (a score of 0.7)
COARSE = 6.0  # a coarse bucket (the context of a jump) is 6 fine ones
NEW_R = 2.0  # a new level is this many noises away from any known one
NEW_AT = 3.0  # and alarms after this many values in a row
RESOLUTION = 50.0  # fine buckets across the range of the values
RANGE_FORGET = 1e-4  # per value, of the range not revisited
HALVE_EVERY = 8192  # the count table is halved every this many values
_TABLE = 384  # cells: 0..127 levels, 128..383 jumps
_GAUSS_QUANTILES = (3.23, 0.845)  # 99th percentile and median of |N(0,1)| / E|N(0,1)|


def alarm_units_to_score(units: float) -> float:
    """Map a deviation in *alarm units* (1.0 = alarm level) to a score in [0, 1].

    ``1 - 10 ** -(units ** 4)``: 0.9 exactly at one alarm unit, ~0.13 at
    half of it, 0.9999 at 1.41 units.

    >>> round(alarm_units_to_score(1.0), 6), alarm_units_to_score(0.0)
    (0.9, 0.0)
    """
    if units <= 0.0:
        return 0.0
    return 1.0 - exp(-_LN10 * units**4)


class SurpriseKernel:
    """A cheap online anomaly detector for one series (see the module docstring).

    Parameters: ``sensitivity`` (multiplies every deviation, default 1.0;
    1.5 alarms on deviations 1.5x smaller) and ``warmup`` (values scored with
    reduced confidence at the start, default 300; the count table's bucket
    width is fixed at half of it, and again, forgetting, when the range of
    the values changes 4-fold). ``ts`` is not used: the detector works per
    value, so irregular sampling is treated as regular.

    ``score_learn_one(ts, value)`` scores then learns (the hot path);
    ``_step(value, False)`` scores without learning.
    """

    __slots__ = (
        "_anchor",
        "_bucket",
        "_dev1",
        "_dev2",
        "_devm",
        "_devv",
        "_fast",
        "_fixed",
        "_hi",
        "_hot",
        "_level",
        "_lo",
        "_maxrun",
        "_mid",
        "_move",
        "_n",
        "_noise",
        "_novel",
        "_origin",
        "_out",
        "_prep",
        "_prev",
        "_recent",
        "_ref",
        "_run",
        "_s50",
        "_s99",
        "_steps",
        "_table",
        "_vol",
        "_width",
        "_z50",
        "_z99",
        "sensitivity",
        "warmup",
    )

    def __init__(self, sensitivity: float = 1.0, warmup: int = 300) -> None:
        if sensitivity <= 0 or warmup < 0:
            raise ValueError("sensitivity > 0 and warmup >= 0 are required")
        self.sensitivity = float(sensitivity)
        self.warmup = int(warmup)
        self._n = 0
        self._prev = 0.0
        self._fast = 0.0  # short-term level
        self._out = 0.0  # sign of the previous value's outlier residual (0: none)
        self._level = 0.0  # slow level
        self._mid = 0.0  # mid-term level (about 10 values)
        self._devm = 0.0  # EW mean |mid-term - slow level|
        self._vol = 0.0  # short-term EW mean |value - short-term level| / noise
        self._devv = 0.0  # EW mean |that - 1|
        self._hot = 0  # values in a row reported at or above one unit
        self._anchor = 0.0  # the slow level's slow level
        self._noise = 0.0  # EW mean |value - short-term level|
        self._dev1 = 0.0  # EW mean |short-term - slow level|
        self._dev2 = 0.0  # EW mean |slow level - anchor|
        self._hi = 0.0  # the range of the values (slowly forgotten): sets the bucket width
        self._lo = 0.0
        self._steps = 0.0  # EW mean |value - previous value|, every value (the bucket width)
        q99, q50 = _GAUSS_QUANTILES
        self._z99, self._z50, self._s99, self._s50 = q99, q50, q99, q50
        self._prep = 0.1  # EW fraction of values equal to the previous one
        self._run = 0  # repeats in a row
        self._maxrun = 0.0  # longest run of repeats seen (slowly forgotten)
        self._ref = 0.0  # habituation reference, in units
        self._width = 0.0  # fine bucket width of the count table (0: not fixed yet)
        self._origin = 0.0
        self._bucket = 0  # fine bucket of the short-term level at the previous value
        self._fixed = 0  # when the bucket width was fixed (the table started)
        self._novel = 0  # values in a row at a new level
        self._table = bytearray(_TABLE)
        self._recent = bytearray(b"\xff" * 8)  # level cells of the last 8 values (255: none)
        self._move = 0.0  # EW mean of the buckets the level moves in 8 values

    def score_learn_one(self, ts: datetime | float | None, value: float) -> float:
        """Score ``value`` in [0, 1], then learn from it (``ts`` is not used)."""
        return self._step(value, True)

    def _step(self, value: float, learn: bool) -> float:
        """The score of ``value``; with ``learn``, the state then learns from it."""
        x = float(value)
        if x - x != 0.0:  # NaN or infinite: no information, nothing learned
            return 0.0
        if x > 1e300 or x < -1e300:  # (no arithmetic below may overflow)
            x = 1e300 if x > 0.0 else -1e300
        n = self._n
        if n == 0:
            if learn:
                self._n = 1
                self._prev = self._fast = self._level = self._anchor = self._mid = x
                self._hi = self._lo = x
            return 0.0
        level = self._level
        noise = self._noise
        floor_ = 1e-9 * ((-level if level < 0.0 else level) + 1.0)
        fast = self._fast
        prev = self._prev
        r = x - fast
        ar = -r if r < 0.0 else r
        z = ar / (noise + floor_)
        # The short-term level follows the data, big residuals only partly (a
        # spike); a second one on the same side means the level itself moved.
        lim = 4.0 * noise + floor_
        if ar < lim:
            fast += FAST * r
            out = 0.0
        else:
            sign = 1.0 if r > 0.0 else -1.0
            if self._out == sign:
                fast = x
            else:
                fast += FAST * sign * lim
            out = sign
        d1 = fast - level
        if d1 < 0.0:
            d1 = -d1
        mid = self._mid + MID * ((fast if ar >= lim else x) - self._mid)
        dm = mid - level
        if dm < 0.0:
            dm = -dm
        d2 = level - self._anchor
        if d2 < 0.0:
            d2 = -d2
        z99 = self._z99
        z50 = self._z50
        s99 = self._s99
        s50 = self._s50
        spike = z / max(SPIKE_AT, 0.446 * z99 * z99 / z50)
        s = d1 / (self._dev1 + floor_)
        shift = s / max(SHIFT_AT, 0.446 * s99 * s99 / s50)
        drift = d2 / ((self._dev2 + floor_) * DRIFT_AT)
        shift = max(shift, dm / ((self._devm + floor_) * MID_AT))
        if spike > CAP:
            spike = CAP
        if shift > CAP:
            shift = CAP
        if drift > CAP:
            drift = CAP
        # Seen it before? (once the bucket width is fixed)
        width = self._width
        table = self._table
        bucket = self._bucket
        jcell = lcell = -1
        novel = 0  # values in a row at a new level
        gj = 1.0  # how unfamiliar this value's jump is (1: never seen)
        if width > 0.0:
            u = (fast - self._origin) / width + 0.5
            u = -1e15 if u < -1e15 else 1e15 if u > 1e15 else u
            bucket = int(floor(u))  # noqa: RUF046 (Cython: a C long)
            # The level's neighbourhood: within twice the noise and twice what the
            # level usually moves in 8 values (the memory's delay: a steady trend
            # is no news).
            u = NEW_R * noise / width + 2.0 * self._move + 1.0
            m = 16 if u > 16.0 else int(u)
            c = 0
            for i in range(bucket - m, bucket + m + 1):
                c += table[i % 127]
            # A new level: the short-term level where it never was, for a few
            # values in a row.
            if n - self._fixed > self.warmup:
                novel = self._novel + 1 if c == 0 else 0
            # Familiar levels discount shifts (the bucket and its neighbours
            # count most, the neighbourhood a quarter) and drifts (the bucket).
            m = 2 * table[bucket % 127] + table[(bucket - 1) % 127] + table[(bucket + 1) % 127]
            g = 1.0 / (1.0 + 0.125 * m)
            drift *= g * g  # (a drift is judged by the bucket it reached)
            g = 1.0 / (1.0 + 0.125 * (m + c // 4))
            shift *= g * g
            if g < 0.5 and s > s99:
                s = -1.0  # (a familiar pattern does not move the alarm level)
            # A jump: the previous value's coarse bucket (8 across the range,
            # clamped) and the step's size on a half-octave scale (32 classes).
            u = (prev - self._origin) / (COARSE * width) + 0.5
            u = -4.0 if u < -4.0 else 3.0 if u > 3.0 else u
            row = int(floor(u)) + 4  # noqa: RUF046
            step = x - prev
            u = (-step if step < 0.0 else step) / width
            u = 1e30 if u > 1e30 else u
            q = int(2.0 * log(1.0 + u) / _LN2)
            q = 15 if q > 15 else q
            q = 16 + q if step >= 0.0 else 15 - q
            jcell = 128 + 32 * row + q
            c = 2 * table[jcell]
            c += table[jcell - 1] if q > 0 else table[jcell]
            c += table[jcell + 1] if q < 31 else table[jcell]
            c += table[jcell - 32] if row > 0 else table[jcell]
            c += table[jcell + 32] if row < 7 else table[jcell]
            g = 1.0 / (1.0 + 0.5 * c)
            gj = g * g
            spike *= gj
            if g < 0.5 and z > z99:
                z = -1.0
        units = max(spike, shift, drift, novel / NEW_AT)
        # Volatility: the short-term residuals grown well beyond the noise.
        vol = self._vol + VOL * (min(ar, 3.0 * noise + floor_) / (noise + floor_) - self._vol)
        if vol > 1.0:  # (familiar moves, such as a usual ramp, are no news)
            units = max(units, gj * (vol - 1.0) / (VOL_AT * self._devv + 1e-9))
        # Stuck: a run of identical values.
        step = x - prev
        if step < 0.0:
            step = -step
        run = 0
        # A run of repeats is stuck when the repeat rate makes it unlikely (e^-12)
        # and it is over twice as long as the longest normal run.
        u = self._prep
        u = 0.01 if u < 0.01 else 0.999999999 if u > 0.999999999 else u
        stuck_at = max(STUCK_AT / -log(u), 2.0 * self._maxrun + 2.0)
        if step <= floor_:
            run = self._run + 1
            if 2 * run < n:  # (constant for most of its history: nothing to compare with)
                units = max(units, run / stuck_at)
        units *= self.sensitivity
        if n < self.warmup:
            units = units * n / self.warmup if n >= 10 else 0.0
        if units > UNITS_CAP:
            units = UNITS_CAP
        ref = self._ref
        # (the value after a first flag is judged as it is: two in a row raise an alarm)
        reported = units if self._hot == 1 else units / max(1.0, REF_MARGIN * ref)
        if reported < HELD and units >= 1.0 and REF_MARGIN * ref >= 1.0:
            # A condition that was news and persists scores 0.7: no longer news
            # (under 0.9), but an alarm it raised stays raised (over 0.5).
            reported = HELD
        score = 1.0 - exp(-_LN10 * reported**4) if reported > 0.05 else 0.0
        if not learn:
            return score
        # Learn.
        n += 1
        self._n = n
        self._fast = fast
        self._mid = mid
        self._vol = vol
        self._out = out
        self._prev = x
        inv = 1.0 / n
        a = max(SLOW, inv)
        dev = x - level
        level += a * dev
        self._level = level
        self._anchor += max(ANCHOR, inv) * (level - self._anchor)
        if reported < 1.0:
            # What is not reported teaches the scales: normal values, and
            # (winsorised harder) those of a condition that persists.
            a = max(SCALE, inv)
            if dev < 0.0:
                dev = -dev
            if n > 20:  # winsorise once the scales mean something (and are not 0)
                k = 4.0 if units < LEARN else 2.0
                u = 0.1 * self._steps + floor_
                ar = min(ar, k * noise + u)
                d1 = min(d1, k * self._dev1 + u)
                d2 = min(d2, k * self._dev2 + u)
                dm = min(dm, k * self._devm + u)
            self._noise = noise + a * (ar - noise)
            self._dev1 += a * (d1 - self._dev1)
            self._dev2 += max(WANDER, inv) * (d2 - self._dev2)
            self._devm += a * (dm - self._devm)
            u = vol - 1.0
            self._devv += a * ((-u if u < 0.0 else u) - self._devv)
            if run == 0:
                self._prep -= REPEAT * self._prep
            elif run < 0.5 * stuck_at:  # (repeats of a long run do not count as usual)
                self._prep += REPEAT * (1.0 - self._prep)
            # (medians stay above 0.05: they divide, and a constant series shrinks them)
            if z >= 0.0:
                self._z99 = z99 * Q_UP if z > z99 else z99 * Q99_DOWN
                self._z50 = z50 * Q50_UP if z > z50 else z50 * Q50_DOWN if z50 > 0.05 else z50
            if s >= 0.0:
                self._s99 = s99 * Q_UP if s > s99 else s99 * Q99_DOWN
                self._s50 = s50 * Q50_UP if s > s50 else s50 * Q50_DOWN if s50 > 0.05 else s50
        if run == 0 and self._run > self._maxrun:
            # A run ended: a normal one's length is familiar now; a stuck one's
            # a quarter of it more each time (normal once seen about 3 times).
            u = float(self._run)
            self._maxrun = u if u < stuck_at else min(u, self._maxrun + 0.25 * u)
        self._run = run
        self._maxrun *= 0.9999
        # Habituation reference.
        ref *= REF_KEEP
        if units > ref and units >= 1.0 and (reported >= 1.0 or REF_MARGIN * ref >= 1.0):
            ref = units  # news, or a condition that persists since it was news
        self._hot = self._hot + 1 if reported >= 1.0 else 0
        self._novel = novel
        self._ref = ref
        # The count table: remember this value's jump and level visit.
        if jcell >= 0:
            if table[jcell] < 255:
                table[jcell] += 1
            # The level is remembered 8 values late: a new level reached in a few
            # steps is judged against where the series was before, not on its way.
            recent = self._recent
            i = n % 8
            lcell = recent[i]
            recent[i] = bucket % 127
            if lcell != 255:
                if table[lcell] < 255:
                    table[lcell] += 1
                m = (bucket % 127 - lcell + 63) % 127 - 63  # buckets moved in 8 values
                self._move += SCALE * ((-m if m < 0 else m) - self._move)
            self._bucket = bucket
            if n % HALVE_EVERY == 0:
                for i in range(_TABLE):
                    table[i] >>= 1
        # The series' own scales, from every value: typical step, and range
        # (which sets the bucket width).
        step = x - prev
        self._steps += max(SCALE, inv) * ((-step if step < 0.0 else step) - self._steps)
        u = RANGE_FORGET * (self._hi - self._lo)
        self._hi = max(x, self._hi - u)
        self._lo = min(x, self._lo + u)
        target = (self._hi - self._lo) / RESOLUTION + floor_
        if (width == 0.0 and n >= max(10, self.warmup // 2)) or (
            width > 0.0 and (target > 4.0 * width or 4.0 * target < width)
        ):
            # Fix the bucket width (again, and forget, if the range changed 4-fold).
            self._width = target
            self._origin = level
            self._fixed = n
            self._bucket = int(floor((fast - level) / target + 0.5))  # noqa: RUF046
            for i in range(_TABLE):
                table[i] = 0
            for i in range(8):
                self._recent[i] = 255
        return score

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.sensitivity, self.warmup), self.__getstate__())

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(
            bytes(getattr(self, s)) if s in ("_recent", "_table") else getattr(self, s)
            for s in self.__slots__
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for slot, value in zip(self.__slots__, state, strict=True):
            setattr(self, slot, bytearray(value) if slot in ("_recent", "_table") else value)
