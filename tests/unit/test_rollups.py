"""RollupState against a plain reference computation (hypothesis), plus edge cases."""

from __future__ import annotations

import math
import pickle
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.runtime.metrics import counter
from flows.kernels.rollups import RollupState
from schemas.models import DeadLetter, Rollup, SourceKind

T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
TIERS = [("1m", 60.0), ("5m", 300.0), ("15m", 900.0)]


@dataclass
class Ident:
    tenant: str
    device: str
    metric: str
    source: SourceKind = "simulator"


def ident(key: int) -> Ident:
    return Ident("t", f"dev-{key}", "power")


# --- the reference: the rules of the module docstring, computed the plain way ---


def reference(
    stream: list[tuple[Any, ...]], tiers: list[tuple[str, float]], delay: float, lateness: float
) -> tuple[dict[tuple[Any, ...], dict[str, Any]], list[tuple[int, float, float]]]:
    """Final aggregates per (key, tier, window_start) and the late (key, ts, value) triples."""
    fine = min(s for _, s in tiers)
    max_ts: dict[int, float] = defaultdict(lambda: -math.inf)
    accepted: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    late = []
    for arrival, item in enumerate(stream):
        if item[0] != "add":
            continue
        _, key, ts, value = item
        end = (math.floor(ts / fine) + 1) * fine
        if end + lateness <= max_ts[key] - delay:
            late.append((key, ts, value))
            continue
        max_ts[key] = max(max_ts[key], ts)
        accepted[key].append((ts, value, arrival))
    windows: dict[tuple[Any, ...], list[tuple[float, float, int]]] = defaultdict(list)
    for key, values in accepted.items():
        for ts, value, arrival in values:
            fine_idx = math.floor(ts / fine)
            for name, length in tiers:
                k = round(length / fine)
                start = (fine_idx // k) * k * fine
                windows[(key, name, start)].append((ts, value, arrival))
    result = {}
    for wkey, vals in windows.items():
        xs = [v for _, v, _ in vals]
        first = min(vals, key=lambda t: (t[0], t[2]))
        last = max(vals, key=lambda t: (t[0], t[2]))
        result[wkey] = {
            "count": len(xs),
            "min": min(xs),
            "max": max(xs),
            "sum": math.fsum(xs),
            "mean": math.fsum(xs) / len(xs),
            "var": statistics.pvariance(xs),
            "first": first[1],
            "last": last[1],
            "first_ts": first[0],
            "last_ts": last[0],
        }
    return result, late


def run(
    stream: list[tuple[Any, ...]], tiers: list[tuple[str, float]], delay: float, lateness: float
) -> tuple[list[Rollup], list[DeadLetter], dict[int, RollupState]]:
    """Feed the stream through one RollupState per key, flush all at the end."""
    states: dict[int, RollupState] = {}
    out: list[Any] = []
    for item in stream:
        key = item[1]
        state = states.setdefault(key, RollupState(tiers, delay, lateness))
        if item[0] == "add":
            state.add(item[2], item[3], out, ident(key))
        elif item[0] == "flush":
            state.flush(out, ident(key))
        else:  # a crash and recovery: the state goes through pickle
            states[key] = pickle.loads(pickle.dumps(state))
    for key, state in states.items():
        state.flush(out, ident(key))
    rollups = [r for r in out if isinstance(r, Rollup)]
    dead = [r for r in out if isinstance(r, DeadLetter)]
    assert len(rollups) + len(dead) == len(out)
    return rollups, dead, states


def final_revisions(rollups: list[Rollup]) -> dict[tuple[Any, ...], Rollup]:
    """The last revision of each window; checks revisions count up 0, 1, 2, ... without gaps."""
    final: dict[tuple[Any, ...], Rollup] = {}
    for r in rollups:
        key = (int(r.device.split("-")[1]), r.tier, r.window_start.timestamp())
        expected = final[key].revision + 1 if key in final else 0
        assert r.revision == expected, f"{key}: revision {r.revision}, expected {expected}"
        final[key] = r
    return final


def close(a: float, b: float, scale: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, scale))


def check_against_reference(stream, tiers, delay, lateness) -> None:
    rollups, dead, _ = run(stream, tiers, delay, lateness)
    expected, late = reference(stream, tiers, delay, lateness)
    final = final_revisions(rollups)
    assert set(final) == set(expected)
    for wkey, want in expected.items():
        got = final[wkey]
        scale = max(abs(want["min"]), abs(want["max"]))
        assert got.count == want["count"], wkey
        for field in ("min", "max", "first", "last"):
            assert getattr(got, field) == want[field], (wkey, field)
        assert got.first_ts.timestamp() == want["first_ts"], wkey
        assert got.last_ts.timestamp() == want["last_ts"], wkey
        assert close(got.sum, want["sum"], scale * got.count), wkey
        assert close(got.mean, want["mean"], scale), wkey
        assert close(got.var, want["var"], scale * scale), (wkey, got.var, want["var"])
        length = dict(tiers)[got.tier]
        assert got.window_end.timestamp() - got.window_start.timestamp() == length
    # Every value is counted exactly once: in the finest windows or as a late dead letter.
    fine = min(tiers, key=lambda t: t[1])[0]
    counted = sum(r.count for r in final.values() if r.tier == fine)
    n_values = sum(1 for item in stream if item[0] == "add")
    assert counted + len(dead) == n_values
    assert len(dead) == len(late)
    for letter in dead:
        assert letter.step == "rollup" and letter.reason.startswith("late:")


# Mostly in order, with late and very late values, flushes and recoveries mixed in.
event = st.one_of(
    st.tuples(
        st.just("add"),
        st.integers(0, 2),
        # Seconds the stream moves on, and how far back this value is; multiples
        # of 5 s make values land exactly on window ends and lateness limits.
        st.one_of(st.integers(0, 40), st.integers(0, 8).map(lambda n: 5 * n)),
        st.one_of(
            st.just(0), st.just(0), st.integers(0, 900), st.integers(0, 60).map(lambda n: 15 * n)
        ),
        st.one_of(
            st.integers(-1000, 1000).map(float),
            st.floats(-1e6, 1e6, allow_nan=False),
        ),
    ),
    st.tuples(st.sampled_from(["flush", "recover"]), st.integers(0, 2)),
)


def materialise(events: list[tuple[Any, ...]], half_seconds: bool) -> list[tuple[Any, ...]]:
    now = T0
    stream: list[tuple[Any, ...]] = []
    for e in events:
        if e[0] == "add":
            now += e[2] / (2 if half_seconds else 1)
            stream.append(("add", e[1], now - e[3], e[4]))
        else:
            stream.append(e)
    return stream


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(event, max_size=200),
    delay=st.sampled_from([0.0, 5.0, 30.0]),
    lateness=st.sampled_from([0.0, 60.0, 300.0]),
    half_seconds=st.booleans(),
)
def test_matches_reference(events, delay, lateness, half_seconds):
    stream = materialise(events, half_seconds)
    check_against_reference(stream, TIERS, delay, lateness)


@settings(max_examples=50, deadline=None)
@given(events=st.lists(event, max_size=150))
def test_matches_reference_default_tiers(events):
    stream = materialise(events, False)
    check_against_reference(stream, [("1h", 3600.0), ("1m", 60.0), ("5m", 300.0)], 5.0, 300.0)


def test_coarse_tier_is_the_merge_of_its_fine_windows():
    rng = random.Random(7)
    stream = []
    now = T0
    for _ in range(3000):
        now += rng.uniform(0, 3)
        back = rng.choice([0, 0, 0, rng.uniform(0, 200)])
        stream.append(("add", 0, now - back, rng.gauss(50, 10)))
    rollups, _, _ = run(stream, TIERS, 5.0, 120.0)
    final = final_revisions(rollups)
    fine = defaultdict(list)
    for (_, tier, start), r in final.items():
        if tier == "1m":
            fine[math.floor(start / 300) * 300].append(r)
    checked = 0
    for (_, tier, start), coarse in final.items():
        if tier != "5m":
            continue
        parts = sorted(fine[start], key=lambda r: r.window_start)
        n = sum(p.count for p in parts)
        mean = sum(p.sum for p in parts) / n
        # Pooled population variance of the parts.
        var = sum(p.count * (p.var + (p.mean - mean) ** 2) for p in parts) / n
        assert coarse.count == n
        assert coarse.min == min(p.min for p in parts)
        assert coarse.max == max(p.max for p in parts)
        assert math.isclose(coarse.sum, sum(p.sum for p in parts), rel_tol=1e-12)
        assert math.isclose(coarse.mean, mean, rel_tol=1e-12)
        assert math.isclose(coarse.var, var, rel_tol=1e-9)
        assert coarse.first == parts[0].first and coarse.last == parts[-1].last
        checked += 1
    assert checked >= 14


def test_windows_emitted_when_watermark_passes_end():
    state = RollupState([("1m", 60.0), ("5m", 300.0)], watermark_delay=10.0, allowed_lateness=0)
    out: list[Any] = []
    state.add(T0 + 1, 1.0, out, ident(0))
    state.add(T0 + 69, 2.0, out, ident(0))  # watermark 59: nothing yet
    assert out == []
    state.add(T0 + 70, 3.0, out, ident(0))  # watermark 60 = end of the first window
    assert [(r.tier, r.count, r.first, r.last) for r in out] == [("1m", 1, 1.0, 1.0)]
    state.add(T0 + 310, 4.0, out, ident(0))  # watermark 300: 1m [60,120) and 5m [0,300)
    assert [(r.tier, r.count, r.sum) for r in out[1:]] == [("1m", 2, 5.0), ("5m", 3, 6.0)]
    assert out[2].window_start == datetime.fromtimestamp(T0, UTC)


def test_late_within_lateness_is_a_correction_and_beyond_is_a_dead_letter():
    late_total = counter("streamforge_late_readings_total", "")
    before = late_total.value(source="modbus")
    who = Ident("acme", "press-1", "temp", "modbus")
    state = RollupState([("1m", 60.0), ("5m", 300.0)], watermark_delay=0.0, allowed_lateness=30)
    out: list[Any] = []
    state.add(T0 + 10, 1.0, out, who)
    state.add(T0 + 75, 2.0, out, who)  # closes [0, 60)
    assert [(r.tier, r.revision, r.count) for r in out] == [("1m", 0, 1)]
    state.add(T0 + 20, 5.0, out, who)  # 15 s after the window end: correction
    assert [(r.tier, r.revision, r.count, r.max) for r in out[1:]] == [("1m", 1, 2, 5.0)]
    state.add(T0 + 95, 3.0, out, who)  # watermark 95 >= 60 + 30: window [0, 60) freed
    state.add(T0 + 30, 9.0, out, who)
    letter = out[-1]
    assert isinstance(letter, DeadLetter)
    assert letter.step == "rollup" and letter.source == "modbus" and letter.tenant == "acme"
    assert letter.reason.startswith("late:")
    assert "2026-03-01T00:00:00+00:00" in letter.reason and "35.000s" in letter.reason
    assert '"value": 9.0' in letter.payload
    assert late_total.value(source="modbus") == before + 1
    # The 5m window got the corrected minute, not the dead letter.
    state.flush(out, who)
    five = [r for r in out if isinstance(r, Rollup) and r.tier == "5m"]
    assert [(r.count, r.sum) for r in five] == [(4, 11.0)]


def test_flush_then_late_value_gives_next_revision_not_a_duplicate():
    state = RollupState([("1m", 60.0), ("5m", 300.0)], watermark_delay=5.0, allowed_lateness=300)
    out: list[Any] = []
    state.add(T0 + 10, 1.0, out, ident(0))
    assert not state.is_empty()
    state.flush(out, ident(0))  # idle timeout: both windows go out early
    assert [(r.tier, r.revision) for r in out] == [("1m", 0), ("5m", 0)]
    assert state.is_empty()
    state.add(T0 + 20, 2.0, out, ident(0))  # same windows, watermark not past their end
    assert len(out) == 2  # not re-emitted value by value
    state.add(T0 + 70, 3.0, out, ident(0))  # watermark 65 passes the 1m window
    assert [(r.tier, r.revision, r.count) for r in out[2:]] == [("1m", 1, 2)]
    state.flush(out, ident(0))
    assert [(r.tier, r.revision, r.count) for r in out[3:]] == [("1m", 0, 1), ("5m", 1, 3)]


def test_flush_if_idle_uses_the_given_clock():
    state = RollupState(TIERS, 5.0, 60.0)
    out: list[Any] = []
    state.add(T0, 1.0, out, ident(0))
    assert not state.flush_if_idle(
        now=1000.0, last_seen=950.0, idle_timeout=60, out=out, ident=ident(0)
    )
    assert out == []
    assert state.flush_if_idle(
        now=1010.0, last_seen=950.0, idle_timeout=60, out=out, ident=ident(0)
    )
    assert len(out) == 3
    # Nothing left to flush: no further wake-ups needed.
    assert not state.flush_if_idle(1e9, 0, 60, out, ident(0))


def test_state_stays_bounded_on_a_long_stream():
    state = RollupState([("1m", 60.0), ("5m", 300.0), ("1h", 3600.0)], 5.0, 300.0)
    out: list[Any] = []
    rng = random.Random(1)
    most = 0
    for i in range(3 * 86400 // 2):  # three days, one value every 2 s, a few late
        ts = T0 + 2 * i - (rng.uniform(0, 400) if i % 97 == 0 and i > 1000 else 0)
        state.add(ts, float(i % 13), out, ident(0))
        most = max(most, state.window_count())
    # (delay + lateness) / length + 1 windows per tier, plus the one being filled.
    assert most <= (305 // 60 + 2) + (305 // 300 + 2) + 2, most
    hours = [r for r in out if isinstance(r, Rollup) and r.tier == "1h"]
    assert len({r.window_start for r in hours}) == 71  # the 72nd is still open
    assert len(pickle.dumps(state)) < 2000


def test_historical_timestamps_are_exact():
    out: list[Any] = []
    state = RollupState([("1m", 60.0), ("1h", 3600.0)], 5.0, 0.0)
    for t0 in (datetime(1998, 6, 1, 12, tzinfo=UTC).timestamp(), -86400.0 * 365 * 20):
        state = RollupState([("1m", 60.0), ("1h", 3600.0)], 5.0, 0.0)
        for i in range(7200):
            state.add(t0 + i, 1.0 + (i % 2), out, ident(0))
        state.flush(out, ident(0))
        hours = [r for r in out if r.tier == "1h" and r.window_start.timestamp() >= t0]
        assert [(r.window_start.timestamp() - t0, r.count, r.mean, r.var) for r in hours[:2]] == [
            (0.0, 3600, 1.5, 0.25),
            (3600.0, 3600, 1.5, 0.25),
        ]
        out.clear()


def test_pickled_state_continues_identically():
    rng = random.Random(3)
    items = [(T0 + i * 1.5 - rng.choice([0, 0, 0, 90]), rng.random()) for i in range(2000)]
    a = RollupState(TIERS, 5.0, 120.0)
    out_a: list[Any] = []
    for ts, v in items[:1000]:
        a.add(ts, v, out_a, ident(0))
    b = pickle.loads(pickle.dumps(a))
    out_b: list[Any] = []
    a_tail: list[Any] = []
    for ts, v in items[1000:]:
        a.add(ts, v, a_tail, ident(0))
        b.add(ts, v, out_b, ident(0))
    assert a_tail == out_b and len(out_b) > 10


def test_variance_is_stable_for_large_offsets():
    state = RollupState([("1m", 60.0)], 0.0, 0.0)
    out: list[Any] = []
    for i in range(60):
        state.add(T0 + i, 1e9 + (i % 2), out, ident(0))  # naive sum of squares loses this
    state.flush(out, ident(0))
    assert out[0].var == 0.25 and out[0].mean == 1e9 + 0.5


def test_ties_first_and_last_follow_arrival():
    state = RollupState([("1m", 60.0), ("5m", 300.0)], 0.0, 600.0)
    out: list[Any] = []
    for v in (1.0, 2.0, 3.0):
        state.add(T0 + 5, v, out, ident(0))
    state.add(T0 + 61, 0.0, out, ident(0))
    state.add(T0 + 5, 4.0, out, ident(0))  # late tie goes in directly to the 5m window too
    state.flush(out, ident(0))
    one = [r for r in out if r.tier == "1m" and r.window_start.timestamp() == T0]
    five = [r for r in out if r.tier == "5m"]
    assert (one[-1].first, one[-1].last) == (1.0, 4.0)
    assert (five[-1].first, five[-1].last) == (1.0, 0.0)


def test_lateness_limit_is_exclusive_at_window_end_plus_lateness():
    state = RollupState([("1m", 60.0)], watermark_delay=10.0, allowed_lateness=30.0)
    out: list[Any] = []
    state.add(T0 + 5, 1.0, out, ident(0))
    state.add(T0 + 99.5, 1.0, out, ident(0))  # watermark 89.5 < 60 + 30: still open for fixes
    state.add(T0 + 6, 2.0, out, ident(0))
    assert [(r.revision, r.count) for r in out] == [(0, 1), (1, 2)]
    state.add(T0 + 100, 1.0, out, ident(0))  # watermark 90 = 60 + 30: the window is gone
    state.add(T0 + 7, 3.0, out, ident(0))
    assert isinstance(out[-1], DeadLetter) and "30.000s after" in out[-1].reason
    assert state.window_count() == 1


def test_snapshot_with_list_accumulators_still_loads() -> None:
    """Snapshots of earlier versions hold each window's accumulator as a list of its fields."""
    rng = random.Random(5)
    tiers = [("1m", 60.0), ("5m", 300.0), ("1h", 3600.0)]
    live = RollupState(tiers, watermark_delay=5.0, allowed_lateness=120.0)
    who, out_live, out_old = ident(1), [], []
    t = 1_700_000_000.0
    for _ in range(500):
        t += rng.uniform(0, 4)
        live.add(t - rng.uniform(0, 30), rng.gauss(10, 2), out_live, who)
    tiers_state, delay, lateness, max_ts, wins, next_check = live.__getstate__()
    as_lists = [{i: list(acc.fields()) for i, acc in tier.items()} for tier in wins]
    assert sum(len(t) for t in as_lists) > 0
    old = RollupState.__new__(RollupState)
    old.__setstate__(
        pickle.loads(pickle.dumps((tiers_state, delay, lateness, max_ts, as_lists, next_check)))
    )
    out_live.clear()
    for _ in range(500):
        t += rng.uniform(0, 4)
        ts, value = t - rng.uniform(0, 30), rng.gauss(10, 2)
        live.add(ts, value, out_live, who)
        old.add(ts, value, out_old, who)
    live.flush(out_live, who)
    old.flush(out_old, who)
    assert len(out_live) > 10
    assert out_old == out_live


# --- a changed tier set (a flow resumed under a new config): RollupState.retier ---

_TIER_SETS = [
    [("1m", 60.0), ("5m", 300.0), ("15m", 900.0)],
    [("1m", 60.0), ("5m", 300.0)],
    [("1m", 60.0), ("15m", 900.0), ("30m", 1800.0)],
    [("5m", 300.0), ("15m", 900.0)],
    [("30s", 30.0), ("1m", 60.0), ("5m", 300.0)],
    [("2m", 120.0), ("10m", 600.0)],
    [("1m", 60.0)],
]


def _latest(rollups: list[Rollup]) -> dict[tuple[str, float], Rollup]:
    final: dict[tuple[str, float], Rollup] = {}
    for r in rollups:
        key = (r.tier, r.window_start.timestamp())
        assert key not in final or r.revision > final[key].revision, f"{key}: revision went back"
        final[key] = r
    return final


@settings(max_examples=200, deadline=None)
@given(
    old=st.sampled_from(_TIER_SETS),
    new=st.sampled_from(_TIER_SETS),
    steps=st.lists(
        st.tuples(st.floats(0.0, 40.0), st.floats(-50.0, 50.0)), min_size=2, max_size=80
    ),
    jitter=st.lists(st.floats(0.0, 30.0), min_size=80, max_size=80),
    split=st.floats(0.0, 1.0),
    delay=st.sampled_from([0.0, 5.0, 30.0]),
)
def test_retier_counts_every_value_in_the_tiers_it_can(old, new, steps, jitter, split, delay):
    """After a change of tiers, every window of a tier whose length is a whole number of old
    windows holds every value, as if the new tiers had been there from the start (nothing is
    freed here: the lateness is longer than the stream)."""
    lateness = 1e7
    values, t = [], T0
    for i, (gap, value) in enumerate(steps):
        t += gap
        values.append((t - jitter[i], value))  # out of order within the lateness
    cut = int(split * len(values))
    out: list[Any] = []
    who = ident(0)
    state = RollupState(old, delay, lateness)
    for ts, value in values[:cut]:
        state.add(ts, value, out, who)
    state = pickle.loads(pickle.dumps(state)).retier(new, delay, lateness)
    mark = len(out)
    for ts, value in values[cut:]:
        state.add(ts, value, out, who)
    state.flush(out, who)
    assert all(isinstance(r, Rollup) for r in out)
    got = _latest(out)
    expected, late = reference([("add", 0, ts, v) for ts, v in values], new, delay, lateness)
    assert not late
    old_lengths = [length for _, length in old]
    exact = {
        name
        for name, length in new
        if any(round(length) % round(o) == 0 for o in old_lengths) or cut == 0
    }
    for (_key, tier, start), want in expected.items():
        if tier not in exact:
            continue
        r = got.get((tier, start))
        assert r is not None, f"{tier} window at {start - T0} missing"
        assert r.count == want["count"], (tier, start - T0, r.count, want["count"])
        assert close(r.sum, want["sum"], 100 * want["count"])
        assert (r.min, r.max) == (want["min"], want["max"])
    assert {r.tier for r in out[mark:]} <= {name for name, _ in new}


def test_retier_to_the_same_tiers_is_the_same_state():
    state = RollupState(TIERS, 5.0, 60.0)
    assert state.retier(list(reversed(TIERS)), 5.0, 60.0) is state
