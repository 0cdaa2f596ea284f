"""StreamForge's default anomaly detector: :class:`RegimeDetector` (see :mod:`flows.anomaly`).

>>> det = RegimeDetector()
>>> for i in range(300):
...     _ = det.score_one(float(i), 10.0 + (i % 7) * 0.1)
>>> det.score_one(300.0, 10.3) < 0.5, det.score_one(301.0, 25.0) > 0.9
(True, True)

Plain Python, tuned for the hot path (it scores every telemetry value), and
compiled by Cython with the C types of ``regime_detector.pxd`` where a
compiler is at hand (see setup.py), which makes it faster still; its
pickled state per series stays small. Speed: ``tests/bench/bench_operators.py``;
quality: ``tests/bench/eval_detector.py``. Both builds give the same scores
(``tests/unit/test_compiled.py``).
"""

from __future__ import annotations

from datetime import datetime
from math import exp, log
from typing import Any

_LN10 = log(10.0)


def alarm_units_to_score(units: float) -> float:
    """Map a deviation in *alarm units* (1.0 = alarm level) to a score in [0, 1].

    ``1 - 10 ** -(units ** 4)``: 0.9 exactly at one alarm unit, ~0.13 at
    half of it, 0.9999 at 1.41 units. Steep, so the alarm threshold matters
    more than the exact shape, and monotone, so any threshold can be chosen.
    """
    if units <= 0.0:
        return 0.0
    return 1.0 - exp(-_LN10 * units**4)


# The fields of a regime (class Regime), in constructor order:
#  0 level   slow EWMA of the values: where the regime is now
#  1 spread  EW mean |value - level|: how wide the regime is
#  2 noise   EW mean |value - fast|: one-step unpredictability
#  3 dev1    EW mean |fast - level|: how far the short-term level normally strays
#  4 anchor  very slow EWMA of level: where the regime has been for long
#  5 dev2    EW mean |level - anchor|: how far the level normally wanders (daily shape)
#  6 prep    EW fraction of values equal to the previous one
#  7 count   values learned in this regime (capped)
#  8 seen    index of the last value that belonged to this regime
#  9 z99, 10 z50   running 99th percentile and median of |value - fast| / noise
# 11 s99, 12 s50   the same for |fast - level| / dev1
# 13 slope   per-value trend of level (Holt), so daily ramps do not read as shifts
# (the alarm level of a deviation extrapolates its 99th percentile by the ratio
# of the two, so heavy-tailed series get a higher alarm level than Gaussian ones)
_NEW_COUNT = 5.0  # a regime born from an accepted change starts as if 5 values old

# Alarm levels, in units of each deviation's learned mean absolute size.
SPIKE_AT = 6.0  # at least; more for heavy-tailed series (see _alarm_level)
SHIFT_AT = 6.0
DRIFT_AT = 6.0
STUCK_AT = 12.0  # nats: a run of repeats with about e^-12 chance of being noise
FLAT_AT = 0.03  # short-term activity / learned noise
# Learning rates (per value).
FAST = 0.3
TREND = 0.1
SLOPE = 0.01
SLOW = 0.03
ANCHOR = 0.001
SCALE = 0.01
WANDER = 0.001
REPEAT = 0.01
ACTIVITY = 0.2
CANDIDATE = 0.1
# A running 99th percentile is multiplied by Q_UP when a value is above it and
# by Q99_DOWN otherwise, so it settles where 1 % of values are above; the
# running median likewise with Q50_UP / Q50_DOWN.
Q_UP = 1.03
Q99_DOWN = 1.0 - (1.03 - 1.0) / 99.0
Q50_UP = 1.03
Q50_DOWN = 1.0 / 1.03
SEPARATE = 8.0  # regimes are at least this many spreads apart (else they are one)
TRUSTED = 50.0  # values a regime must have learned before the series may switch to it
_GAUSS_QUANTILES = (3.23, 0.845)  # 99th percentile and median of |N(0,1)| / E|N(0,1)|
_LEARN = 0.84  # units below this (score < 0.5) are normal and learned from


class Regime:
    """One regime of a series: its robust statistics (see the field list above).

    Compiled (regime_detector.pxd), the fields are C doubles: 128 bytes with
    no float objects, where a list of 14 floats took about 500.
    """

    __slots__ = (
        "anchor",
        "count",
        "dev1",
        "dev2",
        "level",
        "noise",
        "prep",
        "s50",
        "s99",
        "seen",
        "slope",
        "spread",
        "z50",
        "z99",
    )

    def __init__(
        self,
        level: float,
        spread: float,
        noise: float,
        dev1: float,
        anchor: float,
        dev2: float,
        prep: float,
        count: float,
        seen: float,
        z99: float,
        z50: float,
        s99: float,
        s50: float,
        slope: float,
    ) -> None:
        self.level = level
        self.spread = spread
        self.noise = noise
        self.dev1 = dev1
        self.anchor = anchor
        self.dev2 = dev2
        self.prep = prep
        self.count = count
        self.seen = seen
        self.z99 = z99
        self.z50 = z50
        self.s99 = s99
        self.s50 = s50
        self.slope = slope

    def fields(self) -> tuple[float, ...]:
        """The fields in ``__init__`` order."""
        return (
            self.level,
            self.spread,
            self.noise,
            self.dev1,
            self.anchor,
            self.dev2,
            self.prep,
            self.count,
            self.seen,
            self.z99,
            self.z50,
            self.s99,
            self.s50,
            self.slope,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Regime, self.fields())


def _width(mode: Regime) -> float:
    """How far a regime's values normally are from its anchor: spread plus wander."""
    return mode.spread + mode.dev2 + 1e-9 * (abs(mode.anchor) + 1.0)


def _alarm_level(q99: float, q50: float, minimum: float) -> float:
    """Alarm level of a deviation from its running 99th percentile and median.

    Extrapolates the tail as ``0.446 * q99 * (q99 / q50)``: 5.5 for Gaussian
    noise (so ``minimum``, 6, applies: about 4.8 sigma) and 18 for
    Student-t(3) noise (a value that far out has about the same small chance
    in both), so heavy-tailed series alarm about as rarely as Gaussian ones.
    """
    level = 0.446 * q99 * q99 / q50
    return max(minimum, level)


class RegimeDetector:
    """StreamForge's default detector: robust, regime-aware, multi-timescale.

    It keeps a few *regimes* of the series (e.g. a machine's ``off`` near
    0 kW and ``on`` near 50 kW), each with robust EWMA statistics, plus a
    short-term context (a fast Holt level + trend, the previous value). Each value is
    scored on five deviations, each divided by its learned typical size; the
    largest decides the score (:func:`alarm_units_to_score`):

    - **spike**: ``|value - fast|`` against the regime's one-step noise
      (the alarm level rises on heavy-tailed series, from a running 99th
      percentile of that ratio);
    - **shift**: ``|fast - level|`` against how far the short-term level
      normally strays from the slow level (a level shift shows here within
      a few values even when each value is unremarkable);
    - **drift**: ``|level - anchor|`` against the regime's normal wander
      (slow daily shapes are learned here; a drift goes beyond them);
    - **stuck**: a run of identical values, as ``run * -ln(P(repeat))``
      with ``P(repeat)`` learned per regime (quantised sensors repeat often,
      noisy ones rarely); **flat**: short-term activity collapsing far below
      the regime's learned noise.

    A value far from the current regime but inside another known regime is
    a regime switch, not an anomaly; a single value between two regimes is
    a transition, judged by what comes next (if the series returns, the
    return is flagged as the spike it was). Anomalous values (score >= 0.5)
    do not update the regime's statistics, so an anomaly cannot teach the
    detector that it is normal. A *persistent* change is accepted instead:
    after about ``accept_after`` mostly anomalous values the detector
    re-baselines at the new level, or opens a new regime (at most
    ``max_regimes``, the least recently seen is dropped).

    Parameters (``DetectorConfig.params``): ``accept_after`` (anomalous
    values, suspect ones counting half, default 40), ``max_regimes`` (1-6,
    default 3), ``warmup`` (first values scored with reduced confidence,
    default 60; changes are accepted after 5 values then) and
    ``sensitivity`` (multiplies every deviation, default 1.0; 1.5 alarms on
    deviations 1.5x smaller). ``ts`` is not used.
    """

    name = "default"

    __slots__ = (
        "_accept",
        "_act",
        "_cand",
        "_cur",
        "_fast",
        "_max_regimes",
        "_modes",
        "_n",
        "_out",
        "_pending",
        "_prev",
        "_run",
        "_sens",
        "_streak",
        "_trend",
        "_warmup",
    )

    def __init__(
        self,
        accept_after: int = 40,
        max_regimes: int = 3,
        warmup: int = 60,
        sensitivity: float = 1.0,
    ) -> None:
        if not 1 <= max_regimes <= 6:
            raise ValueError("max_regimes must be between 1 and 6")
        if accept_after < 1 or warmup < 0 or sensitivity <= 0:
            raise ValueError("accept_after >= 1, warmup >= 0 and sensitivity > 0 are required")
        self._accept = int(accept_after)
        self._max_regimes = int(max_regimes)
        self._warmup = int(warmup)
        self._sens = float(sensitivity)
        self._n = 0
        self._fast = 0.0
        self._trend = 0.0  # per value, of the short-term level
        self._prev = 0.0
        self._out = 0.0  # sign of the previous value's outlier residual (0: none)
        self._act = 0.0  # EW mean |value - previous value|, short term (flatness)
        # Values equal to the previous one, in a row; negative after a constant
        # stretch was accepted, until the series moves again.
        self._run = 0
        self._streak = 0.0  # leaky count of anomalous values (acceptance)
        self._pending = 0.0  # units of a transition value, paid if the series comes back
        # Level, spread, noise and count of the recent anomalous data (acceptance).
        self._cand: list[float] | None = None
        self._cur = 0
        self._modes: list[Regime] = []

    def score_one(self, ts: datetime | float, value: float) -> float:
        """Score ``value`` in [0, 1], then learn from it."""
        x = float(value)
        n = self._n + 1
        self._n = n
        if n == 1:
            q99, q50 = _GAUSS_QUANTILES
            self._modes = [Regime(x, 0.0, 0.0, 0.0, x, 0.0, 0.1, 1.0, 1.0, q99, q50, q99, q50, 0.0)]
            self._fast = self._prev = x
            return 0.0
        m = self._modes[self._cur]
        level = m.level
        noise = m.noise
        # Scales never reach zero: a perfectly constant regime still has a resolution.
        floor = 1e-9 * (abs(level) + 1.0)
        old_fast = self._fast
        trend = self._trend
        fast = old_fast + trend  # the prediction (Holt: level + trend)
        r = x - fast
        ar = -r if r < 0.0 else r
        z = ar / (noise + floor)
        pending = self._pending
        self._pending = 0.0
        units = 0.0
        switched = transition = False
        if z > 3.0 and len(self._modes) > 1:
            switched, units = self._switch(x, n, pending == 0.0 and self._streak == 0.0)
            transition = units > 0.0
            if switched:
                m = self._modes[self._cur]
        # The regime's statistics (the new one's after a switch).
        level = m.level
        spread = m.spread
        noise = m.noise
        dev1 = m.dev1
        anchor = m.anchor
        dev2 = m.dev2
        prep = m.prep
        count = m.count
        z99 = m.z99
        z50 = m.z50
        s99 = m.s99
        s50 = m.s50
        slope = m.slope
        if switched:
            floor = 1e-9 * (abs(level) + 1.0)
            fast = level + FAST * (x - level)  # as if the context had been in it
            trend = 0.0
            ar = x - level
            ar = -ar if ar < 0.0 else ar
            z = ar / (spread + floor)
            pending = 0.0
        # The short-term level follows the data, big residuals only partly (spikes).
        lim = 4.0 * noise + floor
        out = self._out
        if transition:
            fast, trend = old_fast, self._trend  # wait for the next value
        elif switched:
            out = 0.0
        elif r < lim and r > -lim:
            fast += FAST * r
            trend += TREND * (fast - old_fast - trend)
            out = 0.0
        else:
            # An outlier moves the short-term level only a little (a spike);
            # a second one on the same side means the level itself moved.
            sign = 1.0 if r > 0.0 else -1.0
            if out == sign:
                fast, trend = x, 0.0
            else:
                fast += FAST * sign * lim
            out = sign
        d1 = fast - level
        if d1 < 0.0:
            d1 = -d1
        d2 = level - anchor
        if d2 < 0.0:
            d2 = -d2
        step = x - self._prev
        if step < 0.0:
            step = -step
        act = self._act + ACTIVITY * (step - self._act)
        # _alarm_level, inlined (hot path).
        alarm = 0.446 * z99 * z99 / z50
        u = z / max(SPIKE_AT, alarm)
        if units == 0.0:  # not a transition value (those have their own units)
            units = u
        s = d1 / (dev1 + floor)
        alarm = 0.446 * s99 * s99 / s50
        u = s / max(SHIFT_AT, alarm)
        units = max(units, u)
        u = d2 / ((dev2 + floor) * DRIFT_AT)
        units = max(units, u)
        units *= self._sens
        if pending > units and z < 3.0:
            units = pending  # back to the regime after one odd value: that was a spike
        if step <= floor:
            run = self._run + 1
            if run > 0:  # (negative: an accepted constant stretch)
                u = run * -log(max(0.01, prep)) / STUCK_AT
                units = max(units, u)
        else:
            run = 0
        if act < FLAT_AT * noise and noise > 10.0 * floor and run >= 0:
            u = 0.5 * FLAT_AT * noise / (act + floor)
            units = max(units, u)
        if count < 5.0:
            units = 0.0  # too little seen to judge, even for learning
        reported = units * n / self._warmup if n < self._warmup else units
        if count < 10.0:
            reported = 0.0
        score = 1.0 - exp(-_LN10 * reported**4) if reported > 0.05 else 0.0
        # Learn.
        self._fast = fast
        self._trend = trend
        self._out = out
        self._prev = x
        self._run = run
        self._act = act
        if transition:
            pass  # one value between two regimes: wait for the next one, learn nothing
        elif units < _LEARN or switched:
            if self._streak > 0.0:
                self._streak -= 1.0
                if self._streak <= 0.0:
                    self._cand = None
            if count < 1e6:
                count += 1.0
            inv = 1.0 / count
            dev = x - level
            old_level = level
            level += slope + max(SLOW, inv) * (dev - slope)
            slope += SLOPE * (level - old_level - slope)
            a = max(SCALE, inv)
            if dev < 0.0:
                dev = -dev
            if count > 20.0:  # winsorise once the scales mean something
                dev = min(dev, 4.0 * spread)
                ar = min(ar, 4.0 * noise)
                d1 = min(d1, 4.0 * dev1)
                d2 = min(d2, 4.0 * dev2)
            spread += a * (dev - spread)
            noise += a * (ar - noise)
            dev1 += a * (d1 - dev1)
            anchor += max(ANCHOR, inv) * (level - anchor)
            dev2 += max(WANDER, inv) * (d2 - dev2)
            prep += REPEAT * ((1.0 if run else 0.0) - prep)
            z99 = z99 * Q_UP if z > z99 else z99 * Q99_DOWN
            # (medians stay above 0.05: they divide, and a constant series shrinks them)
            z50 = z50 * Q50_UP if z > z50 else z50 * Q50_DOWN if z50 > 0.05 else z50
            s99 = s99 * Q_UP if s > s99 else s99 * Q99_DOWN
            s50 = s50 * Q50_UP if s > s50 else s50 * Q50_DOWN if s50 > 0.05 else s50
            m.level = level
            m.spread = spread
            m.noise = noise
            m.dev1 = dev1
            m.anchor = anchor
            m.dev2 = dev2
            m.prep = prep
            m.count = count
            m.seen = n
            m.z99 = z99
            m.z50 = z50
            m.s99 = s99
            m.s50 = s50
            m.slope = slope
        else:
            m.seen = n
            # Suspect values (score 0.5 .. 0.9) count half: a drift gets time to show.
            self._streak += 1.0 if units >= 1.0 else 0.5
            cand = self._cand
            if cand is None:
                self._cand = [x, 0.0, 0.0, 1.0]
            else:
                # The new data's level follows fast (a first transition value
                # is soon forgotten); its scales average from the start.
                k = cand[3] + 1.0
                cand[3] = k
                a = 1.0 / k if k < 1.0 / CANDIDATE else CANDIDATE
                cand[0] += FAST * (x - cand[0])
                dev = x - cand[0]
                cand[1] += a * ((-dev if dev < 0.0 else dev) - cand[1])
                cand[2] += a * (step - cand[2])
            if self._streak >= self._accept or (n <= self._warmup and self._streak >= 5):
                self._accept_change(n, run)
        return score

    def score_learn_one(self, ts: datetime | float, value: float) -> float:
        """The same as ``score_one`` (the name the series step calls)."""
        return self.score_one(ts, value)

    def _switch(self, x: float, n: int, may_transit: bool) -> tuple[bool, float]:
        """Whether ``x`` moves the series to another known regime (then it does so).

        Also spots a transition: ``x`` between the current regime and
        another one (only one value in a row can be a transition: with
        ``may_transit`` false it cannot). Returns ``(switched, units)``;
        ``units`` is 0 unless ``x`` is a transition value, whose units are
        held back (scored ~0.3 now, and paid in full if the next value returns).
        """
        modes = self._modes
        cur = modes[self._cur]
        best, best_d = -1, 3.0
        between = False
        for j, mode in enumerate(modes):
            if j == self._cur or mode.count < TRUSTED or n - mode.seen > 200_000:
                continue
            if abs(mode.anchor - cur.anchor) < SEPARATE * max(_width(mode), _width(cur)):
                continue  # too close to tell apart: not a regime of its own
            # A regime spans its anchor +- its width (its level may be stale).
            d = abs(x - mode.anchor) / _width(mode)
            if d < best_d:
                best, best_d = j, d
            lo, hi = (
                (cur.anchor, mode.anchor) if cur.anchor < mode.anchor else (mode.anchor, cur.anchor)
            )
            if lo < x < hi:
                between = True
        if best >= 0:
            self._cur = best
            return True, 0.0
        if between and may_transit:
            r = abs(x - self._fast) / (cur.noise + 1e-9 * (abs(cur.level) + 1.0))
            self._pending = r / _alarm_level(cur.z99, cur.z50, SPIKE_AT) * self._sens
            return False, 0.7
        return False, 0.0

    def _accept_change(self, n: int, run: int) -> None:
        """A change persisted: make what the data does now the new normal."""
        cand = self._cand
        self._streak = 0.0
        self._cand = None
        if cand is None:
            return
        m = self._modes[self._cur]
        level, spread, noise, _ = cand
        floor = 1e-9 * (abs(level) + 1.0)
        if run >= 5:
            # Constant for long: accept it until the series moves again.
            self._run = -(10**9)
            return
        self._fast = level
        self._trend = 0.0
        for j, other in enumerate(self._modes):
            # (a young regime's wander is not known well enough to widen it)
            width = 3.0 * _width(other) if other.count >= TRUSTED else 0.0
            if abs(level - other.anchor) <= max(SEPARATE * other.spread, width):
                # Within a known regime (the current one or another): re-baseline it,
                # taking at least the variability the new data shows.
                other.level = other.anchor = level
                other.spread = max(other.spread, spread)
                other.noise = max(other.noise, 0.8 * noise)
                other.seen = n
                self._cur = j
                return
        noise = max(0.8 * noise, floor)
        new = Regime(level, max(spread, noise), noise, 0.5 * noise, level, 0.5 * noise, m.prep,
                     _NEW_COUNT, float(n), m.z99, m.z50, m.s99, m.s50, 0.0)  # fmt: skip
        if len(self._modes) < self._max_regimes:
            self._modes.append(new)
            self._cur = len(self._modes) - 1
        else:
            j = min(range(len(self._modes)), key=lambda i: self._modes[i].seen)
            self._modes[j] = new
            self._cur = j

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for slot, value in zip(self.__slots__, state, strict=True):
            if slot == "_modes":
                # (snapshots of earlier versions hold each regime as a list of its fields)
                value = [Regime(*m) if type(m) is list else m for m in value]
            setattr(self, slot, value)
