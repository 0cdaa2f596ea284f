"""Multi-resolution event-time rollups of one time series, with late data.

>>> from schemas.models import Reading
>>> from datetime import UTC, datetime
>>> r = Reading(device="press-1", metric="power", ts=datetime(2026, 1, 1, tzinfo=UTC), value=1.0)
>>> state = RollupState([("1m", 60.0), ("5m", 300.0)], watermark_delay=5.0, allowed_lateness=120.0)
>>> out: list = []
>>> t0 = r.ts.timestamp()
>>> for i, value in enumerate([1.0, 3.0, 2.0]):
...     state.add(t0 + 20 * i, value, out, r)
>>> state.add(t0 + 70, 5.0, out, r)        # watermark 65 s: passes the first 1m window
>>> [(x.tier, x.count, x.mean, x.revision) for x in out]
[('1m', 3, 2.0, 0)]
>>> state.add(t0 + 50, 4.0, out, r)        # late but within allowed lateness: a correction
>>> [(x.tier, x.count, x.max, x.revision) for x in out[1:]]
[('1m', 4, 4.0, 1)]

One :class:`RollupState` per series computes every tier (default 1m, 5m
and 1h) in one pass: each value updates only its *finest* window; when a
finest window is first emitted its partial aggregate is merged into the
coarser windows that contain it (Chan's parallel merge of Welford
moments). Values arriving for a finest window that was already emitted go
straight into the coarser windows too, so every coarse window always
equals the merge of its finest windows.

When windows are emitted (all times are event time, in seconds):

- The *watermark* of a series is its highest event time seen minus
  ``watermark_delay``; it never goes back.
- A window ``[start, end)`` is emitted (``revision`` 0) as soon as the
  watermark reaches ``end``. Finest windows are emitted before coarser ones.
- A value is *accepted* while the watermark is before ``end +
  allowed_lateness`` of its finest window; it then counts in every tier.
  If its window was already emitted, every window it changed is emitted
  again right away (``revision + 1``) once the watermark is past the
  window's end; sinks upsert on (tenant, device, metric, tier, window_start).
- A value whose finest window is past ``end + allowed_lateness`` is a
  :class:`~schemas.models.DeadLetter` (``step="rollup"``, reason
  ``"late: ..."``) counted by ``streamforge_late_readings_total``; it
  counts in no tier. Deciding on the finest window keeps tiers consistent.
- A window is freed once the watermark passes ``end + allowed_lateness``.
- :meth:`RollupState.flush` (idle timeout, end of input) emits every window
  holding unemitted values even though the watermark has not reached its
  end. Such windows are kept: values arriving for them later are emitted
  as a correction (``revision + 1``, never a second revision 0) when the
  watermark reaches the window's end, or at the next flush.

``first``/``last`` are the values with the lowest/highest event time; on
equal timestamps the first to arrive is ``first`` and the last to arrive
is ``last``. ``var`` is the population variance (Welford, Chan merge).
No wall clock is read except to stamp dead letters' ``received_at``, so
replayed history (timestamps years in the past) rolls up exactly.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from connectors.runtime.metrics import counter
from schemas.models import DeadLetter, Rollup, SourceKind

LATE_READINGS = counter(
    "streamforge_late_readings_total",
    "Readings later than a rollup window's allowed lateness (sent as dead letters)",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INF = math.inf


class Acc:
    """One window's accumulator: its moments, extremes, first and last value.

    ``revision`` counts the window's emissions (a finest window with
    ``revision > 0`` has been merged into the coarser tiers); ``dirty`` is
    True while it holds values not emitted yet. Compiled (rollups.pxd), the
    fields are C numbers, 112 bytes with no float objects.
    """

    __slots__ = (
        "count",
        "dirty",
        "first",
        "first_ts",
        "hi",
        "last",
        "last_ts",
        "lo",
        "m2",
        "mean",
        "revision",
        "total",
    )

    def __init__(
        self,
        count: int,
        mean: float,
        m2: float,
        lo: float,
        hi: float,
        total: float,
        first: float,
        first_ts: float,
        last: float,
        last_ts: float,
        revision: int,
        dirty: bool,
    ) -> None:
        self.count = count
        self.mean = mean
        self.m2 = m2  # sum of squared deviations from the mean
        self.lo = lo
        self.hi = hi
        self.total = total
        self.first = first
        self.first_ts = first_ts
        self.last = last
        self.last_ts = last_ts
        self.revision = revision
        self.dirty = dirty

    def fields(self) -> tuple[Any, ...]:
        """The fields in ``__init__`` order."""
        return (
            self.count,
            self.mean,
            self.m2,
            self.lo,
            self.hi,
            self.total,
            self.first,
            self.first_ts,
            self.last,
            self.last_ts,
            self.revision,
            self.dirty,
        )

    def partial(self) -> Acc:
        """A copy to start a coarser window with: not emitted yet, holding unemitted values."""
        copy = Acc(*self.fields())
        copy.revision = 0
        copy.dirty = True
        return copy

    def __reduce__(self) -> tuple[Any, ...]:
        return (Acc, self.fields())


class SeriesIdent(Protocol):
    """What names a series in emitted records; a :class:`~schemas.models.Reading` is one."""

    @property
    def tenant(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def source(self) -> SourceKind: ...


@dataclass(frozen=True, slots=True)
class RollupSpec:
    """The tiers and lateness rules, shared by every series of a flow."""

    names: tuple[str, ...]
    """Tier names, finest first."""
    lengths: tuple[float, ...]
    """Window length of each tier in seconds (a multiple of the finest)."""
    factors: tuple[int, ...]
    """How many finest windows make one window of each tier."""
    watermark_delay: float
    allowed_lateness: float


@functools.lru_cache(maxsize=64)
def _spec(
    tiers: tuple[tuple[str, float], ...], watermark_delay: float, allowed_lateness: float
) -> RollupSpec:
    # Cached so that the thousands of series states of a flow (and their
    # unpickled copies) share one spec object.
    ordered = sorted(tiers, key=lambda t: t[1])
    fine = ordered[0][1]
    if fine <= 0:
        raise ValueError("rollup windows must be longer than zero")
    factors = []
    for name, length in ordered:
        ratio = length / fine
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"window {name!r} is not a whole multiple of the finest window")
        factors.append(round(ratio))
    if len(set(factors)) != len(factors):
        raise ValueError("rollup windows must be distinct")
    if watermark_delay < 0 or allowed_lateness < 0:
        raise ValueError("watermark_delay and allowed_lateness must be >= 0")
    return RollupSpec(
        names=tuple(n for n, _ in ordered),
        # Coarse lengths derive from the finest so window bounds agree exactly.
        lengths=tuple(fine * k for k in factors),
        factors=tuple(factors),
        watermark_delay=float(watermark_delay),
        allowed_lateness=float(allowed_lateness),
    )


def _dt(seconds: float) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)  # the fast path
    except (OverflowError, OSError, ValueError):
        # Platforms whose C library rejects some (e.g. negative) timestamps.
        return _EPOCH + timedelta(seconds=seconds)


def _merge_into(dst: Acc, src: Acc) -> None:
    """Merge the moments and extremes of ``src`` into ``dst`` (Chan et al.)."""
    na, nb = dst.count, src.count
    n = na + nb
    delta = src.mean - dst.mean
    dst.mean += delta * nb / n
    dst.m2 += src.m2 + delta * delta * na * nb / n
    dst.count = n
    if src.lo < dst.lo:
        dst.lo = src.lo
    if src.hi > dst.hi:
        dst.hi = src.hi
    dst.total += src.total
    # src arrived after dst's values, so it loses ties for first and wins them for last.
    if src.first_ts < dst.first_ts:
        dst.first, dst.first_ts = src.first, src.first_ts
    if src.last_ts >= dst.last_ts:
        dst.last, dst.last_ts = src.last, src.last_ts
    dst.dirty = True


def _add_value(acc: Acc, ts: float, x: float) -> None:
    n = acc.count + 1
    acc.count = n
    delta = x - acc.mean
    mean = acc.mean + delta / n
    acc.mean = mean
    acc.m2 += delta * (x - mean)
    if x < acc.lo:
        acc.lo = x
    elif x > acc.hi:
        acc.hi = x
    acc.total += x
    if ts < acc.first_ts:
        acc.first = x
        acc.first_ts = ts
    if ts >= acc.last_ts:
        acc.last = x
        acc.last_ts = ts
    acc.dirty = True


class RollupState:
    """The open rollup windows of one series (see the module docstring for the rules).

    ``tiers`` are ``(name, seconds)`` pairs in any order, e.g.
    ``RollupConfig.window_seconds()``; every length must be a whole multiple
    of the shortest. Outputs go to the ``out`` list passed to each call:
    :class:`~schemas.models.Rollup` records (including corrections) and
    late :class:`~schemas.models.DeadLetter` records. ``ident`` names the
    series in those records (anything with ``tenant``, ``device``,
    ``metric`` and ``source``; the reading itself will do).

    Memory: an accumulator of 12 numbers per window still open or within its
    allowed lateness, about ``1 + (watermark_delay + allowed_lateness) /
    length`` windows per tier; nothing else grows.
    """

    __slots__ = (
        "_cur_acc",
        "_cur_end",
        "_cur_idx",
        "_delay",
        "_lateness",
        "_len0",
        "_max_ts",
        "_next_check",
        "_spec",
        "_wins",
    )

    def __init__(
        self,
        tiers: Iterable[tuple[str, float]],
        watermark_delay: float,
        allowed_lateness: float,
    ) -> None:
        self._set_spec(
            _spec(
                tuple((str(n), float(s)) for n, s in tiers),
                float(watermark_delay),
                float(allowed_lateness),
            )
        )
        self._max_ts = -_INF
        # One dict per tier: window index (start / length) -> accumulator.
        self._wins: list[dict[int, Acc]] = [{} for _ in self._spec.lengths]
        # Lowest watermark at which _advance has anything to do (an unemitted
        # window's end, or an emitted window's end + allowed lateness).
        self._next_check = _INF
        # The finest window the last value went to: in-order data hits it.
        self._cur_idx: int | None = None
        self._cur_acc: Acc | None = None
        self._cur_end = _INF

    def _set_spec(self, spec: RollupSpec) -> None:
        self._spec = spec
        # The spec's numbers that every value needs, as the state's own fields
        # (compiled, they are C doubles: no attribute lookup on the spec).
        self._len0 = spec.lengths[0]
        self._delay = spec.watermark_delay
        self._lateness = spec.allowed_lateness

    @classmethod
    def from_config(cls, config: Any) -> RollupState:
        """A state for a :class:`~schemas.config.RollupConfig`."""
        return cls(config.window_seconds(), config.watermark_delay, config.allowed_lateness)

    @property
    def spec(self) -> RollupSpec:
        """The tiers and lateness rules."""
        return self._spec

    @property
    def watermark(self) -> float:
        """Highest event time seen minus ``watermark_delay`` (``-inf`` before any value)."""
        return self._max_ts - self._spec.watermark_delay

    def window_count(self) -> int:
        """Windows held (open, or emitted and still accepting corrections)."""
        return sum(len(w) for w in self._wins)

    def is_empty(self) -> bool:
        """True when no window holds unemitted values, so :meth:`flush` has nothing to do.

        Emitted windows kept for corrections do not count: an idle series
        needs no wake-up once its windows were flushed.
        """
        return not any(acc.dirty for wins in self._wins for acc in wins.values())

    def add(self, ts: float, value: float, out: list[Any], ident: SeriesIdent) -> None:
        """Add one value at event time ``ts`` (epoch seconds) and emit what became due."""
        idx = math.floor(ts / self._len0)
        if idx == self._cur_idx:
            # The window the previous value went to: it is held, so not too late.
            acc = self._cur_acc
            assert acc is not None  # (set with _cur_idx)
            end = self._cur_end
            if ts > self._max_ts:
                self._max_ts = ts
        else:
            wm = self._max_ts - self._delay
            end = (idx + 1) * self._len0
            if end + self._lateness <= wm:
                self._late(ts, value, idx, wm, out, ident)
                return
            if ts > self._max_ts:
                self._max_ts = ts
            wins = self._wins[0]
            found = wins.get(idx)
            if found is None:
                x = float(value)
                acc = wins[idx] = Acc(1, x, 0.0, x, x, x, x, ts, x, ts, 0, True)
                self._cur_idx, self._cur_acc, self._cur_end = idx, acc, end
                if end < self._next_check:
                    self._next_check = end
                if self._max_ts - self._delay >= self._next_check:
                    self._advance(out, ident, False)
                return
            acc = found
            self._cur_idx, self._cur_acc, self._cur_end = idx, acc, end
        was_dirty = acc.dirty
        _add_value(acc, ts, value)
        if not was_dirty and end < self._next_check:
            self._next_check = end
        if acc.revision:
            # Already merged into the coarser windows: update them directly.
            spec = self._spec
            for t in range(1, len(spec.factors)):
                c = idx // spec.factors[t]
                cacc = self._wins[t].get(c)
                if cacc is None:  # (only after a retier that had no data for this tier)
                    x = float(value)
                    self._wins[t][c] = Acc(1, x, 0.0, x, x, x, x, ts, x, ts, 0, True)
                    cend = (c + 1) * spec.lengths[t]
                    if cend < self._next_check:
                        self._next_check = cend
                    continue
                if not cacc.dirty:
                    cend = (c + 1) * spec.lengths[t]
                    if cend < self._next_check:
                        self._next_check = cend
                _add_value(cacc, ts, value)
        if self._max_ts - self._delay >= self._next_check:
            self._advance(out, ident, False)

    def add_many(
        self, items: Iterable[tuple[float, float]], out: list[Any], ident: SeriesIdent
    ) -> None:
        """Add ``(ts, value)`` pairs in arrival order (same as calling :meth:`add` for each)."""
        for ts, value in items:
            self.add(ts, value, out, ident)

    def flush(self, out: list[Any], ident: SeriesIdent) -> None:
        """Emit every window holding unemitted values, whatever the watermark.

        For the idle timeout and the end of input. The windows stay until the
        watermark passes their end plus allowed lateness, so later values for
        them are emitted as corrections (``revision + 1``).
        """
        self._advance(out, ident, True)

    def flush_if_idle(
        self, now: float, last_seen: float, idle_timeout: float, out: list[Any], ident: SeriesIdent
    ) -> bool:
        """Flush when ``now - last_seen >= idle_timeout`` (wall-clock seconds); True if it did.

        The caller passes the clock, so tests and replays stay deterministic.
        """
        if now - last_seen < idle_timeout or self.is_empty():
            return False
        self.flush(out, ident)
        return True

    def _advance(self, out: list[Any], ident: SeriesIdent, force: bool) -> None:
        """Emit due windows (all dirty ones if ``force``), free expired ones."""
        spec = self._spec
        wm = self._max_ts - spec.watermark_delay
        lateness = spec.allowed_lateness
        nxt = _INF
        for t, wins in enumerate(self._wins):
            if not wins:
                continue
            length = spec.lengths[t]
            for idx in sorted(wins):
                acc = wins[idx]
                end = (idx + 1) * length
                if acc.dirty and (force or end <= wm):
                    self._emit(t, idx, acc, out, ident)
                if end + lateness <= wm:
                    del wins[idx]
                    if t == 0 and idx == self._cur_idx:
                        self._cur_idx, self._cur_end = None, _INF
                        self._cur_acc = None
                else:
                    due = end if acc.dirty else end + lateness
                    if due < nxt:
                        nxt = due
        self._next_check = nxt

    def _emit(self, t: int, idx: int, acc: Acc, out: list[Any], ident: SeriesIdent) -> None:
        spec = self._spec
        if t == 0 and acc.revision == 0:
            # First emission of a finest window: hand its partial to the coarser tiers.
            for ct in range(1, len(spec.factors)):
                c = idx // spec.factors[ct]
                cacc = self._wins[ct].get(c)
                if cacc is None:
                    self._wins[ct][c] = acc.partial()
                else:
                    _merge_into(cacc, acc)
        length = spec.lengths[t]
        n = acc.count
        out.append(
            Rollup(
                ident.tenant,
                ident.device,
                ident.metric,
                spec.names[t],
                _dt(idx * length),
                _dt((idx + 1) * length),
                n,
                float(acc.lo),
                float(acc.hi),
                float(acc.total),
                float(acc.mean),
                max(acc.m2 / n, 0.0),
                float(acc.first),
                float(acc.last),
                _dt(acc.first_ts),
                _dt(acc.last_ts),
                acc.revision,
            )
        )
        acc.revision += 1
        acc.dirty = False

    def _late(
        self, ts: float, value: float, idx: int, wm: float, out: list[Any], ident: SeriesIdent
    ) -> None:
        spec = self._spec
        length = spec.lengths[0]
        start, end = idx * length, (idx + 1) * length
        reason = (
            f"late: value at {_dt(ts).isoformat()} for {spec.names[0]} window "
            f"[{_dt(start).isoformat()}, {_dt(end).isoformat()}) arrived {wm - end:.3f}s "
            f"after the window closed (watermark {_dt(wm).isoformat()}), "
            f"beyond the allowed lateness of {spec.allowed_lateness:g}s"
        )
        payload = json.dumps(
            {
                "tenant": ident.tenant,
                "device": ident.device,
                "metric": ident.metric,
                "ts": _dt(ts).isoformat(),
                "value": value,
            }
        )
        out.append(
            DeadLetter(
                received_at=datetime.now(UTC),
                source=ident.source,
                reason=reason,
                payload=payload,
                origin=f"{ident.device}/{ident.metric}",
                step="rollup",
                tenant=ident.tenant,
            )
        )
        LATE_READINGS.inc(source=ident.source)

    def retier(
        self, tiers: Iterable[tuple[str, float]], watermark_delay: float, allowed_lateness: float
    ) -> RollupState:
        """This state under another set of tiers (a changed config), keeping the tiers that remain.

        A tier is kept by its length (renamed if its name changed): its
        windows carry on as if nothing happened. A new tier starts from the
        data of the coarsest old tier its windows are made of, so its
        first window counts what is still held (values since the oldest
        window not yet freed) and may be partial. When the finest tier
        changes, the old finest windows never emitted are merged into the
        coarser ones first (as their emission would have), and a window of
        the new finest tier that already held data is emitted first as
        ``revision`` 1 (its data is in the coarser tiers already).

        >>> from schemas.models import Reading
        >>> from datetime import UTC, datetime
        >>> r = Reading(device="d", metric="m", ts=datetime(2026, 1, 1, tzinfo=UTC), value=0.0)
        >>> state = RollupState([("1m", 60.0), ("5m", 300.0)], 0.0, 600.0)
        >>> out: list = []
        >>> for i in range(6):
        ...     state.add(30.0 * i, float(i), out, r)
        >>> state = state.retier([("1m", 60.0), ("5m", 300.0), ("15m", 900.0)], 0.0, 600.0)
        >>> state.add(960.0, 6.0, out, r)
        >>> [(x.tier, x.count) for x in out if x.revision == 0]
        [('1m', 2), ('1m', 2), ('1m', 2), ('5m', 6), ('15m', 6)]
        """
        spec = _spec(
            tuple((str(n), float(s)) for n, s in tiers),
            float(watermark_delay),
            float(allowed_lateness),
        )
        old = self._spec
        if spec == old:  # (the same tiers in another order: an equal spec)
            return self

        def key(length: float) -> int:
            return round(length * 1e6)

        old_tier = {key(length): t for t, length in enumerate(old.lengths)}
        wins = [dict(w) for w in self._wins]
        same_finest = key(spec.lengths[0]) == key(old.lengths[0])
        if not same_finest:
            # The old finest windows never emitted go into the coarser ones now.
            for idx, acc in wins[0].items():
                if acc.revision:
                    continue
                for ct in range(1, len(old.factors)):
                    c = idx // old.factors[ct]
                    cacc = wins[ct].get(c)
                    if cacc is None:
                        wins[ct][c] = acc.partial()
                    else:
                        _merge_into(cacc, acc)
        new_wins: list[dict[int, Acc]] = []
        kept: list[int] = []  # new tier -> old tier, or -1
        for length in spec.lengths:
            t = old_tier.get(key(length), -1)
            kept.append(t)
            new_wins.append(wins[t] if t >= 0 else {})
        for t in range(len(spec.lengths)):
            if kept[t] >= 0:
                continue
            # Seed from the coarsest old tier whose windows make up this tier's.
            sources = [
                s
                for s in range(len(old.lengths))
                if key(spec.lengths[t]) % key(old.lengths[s]) == 0
            ]
            if not sources:
                continue
            src = sources[-1]
            ratio = round(spec.lengths[t] / old.lengths[src])
            # The finest tier merged only its emitted windows into the coarser ones.
            only_merged = src == 0 and same_finest
            target = new_wins[t]
            for idx in sorted(wins[src]):
                acc = wins[src][idx]
                if only_merged and acc.revision == 0:
                    continue
                c = idx // ratio
                cacc = target.get(c)
                if cacc is None:
                    target[c] = acc.partial()
                else:
                    _merge_into(cacc, acc)
        if not same_finest:
            # The new finest windows' data is in the coarser windows already:
            # they must not be merged into them again when first emitted.
            for acc in new_wins[0].values():
                if acc.revision == 0:
                    acc.revision = 1
        fresh = RollupState(tuple(zip(spec.names, spec.lengths, strict=True)), 0.0, 0.0)
        fresh._set_spec(spec)
        fresh._wins = new_wins
        fresh._max_ts = self._max_ts
        fresh._next_check = -_INF  # the next value looks at every window
        return fresh

    def __getstate__(self) -> tuple[Any, ...]:
        spec = self._spec
        tiers = tuple(zip(spec.names, spec.lengths, strict=True))
        return (
            tiers,
            spec.watermark_delay,
            spec.allowed_lateness,
            self._max_ts,
            self._wins,
            self._next_check,
        )

    def __setstate__(self, state: Sequence[Any]) -> None:
        tiers, delay, lateness, self._max_ts, wins, self._next_check = state
        # (snapshots of earlier versions hold each accumulator as a list of its fields)
        self._wins = [
            {i: Acc(*acc) if type(acc) is list else acc for i, acc in tier.items()} for tier in wins
        ]
        self._set_spec(_spec(tiers, delay, lateness))
        self._cur_idx, self._cur_acc, self._cur_end = None, None, _INF
