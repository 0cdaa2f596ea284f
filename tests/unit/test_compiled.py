"""The compiled kernels (flows/kernels/, setup.py) against their own pure-Python source.

A kernel runs two ways: as the extension Cython built from it, or as its
``.py``. These tests load the ``.py`` a second time under another name and
check that both give the same results and that a detector's state moves
between them (a recovery snapshot taken by one build resumes in the other);
that only kernels are ever compiled; and that an edited kernel is never
shadowed by a stale build (:class:`connectors.runtime.compiled.KernelFinder`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import math
import os
import pickle
import random
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

import pytest

from connectors.runtime.compiled import KernelFinder, kernel_digests, write_manifest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = sorted(p for p in (ROOT / "flows" / "kernels").glob("*.py") if p.name != "__init__.py")


def load_pure(source: str) -> ModuleType:
    """The ``.py`` of a kernel, executed as a module of its own."""
    name = "_pure_" + source.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, ROOT / source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_compiled(module: ModuleType) -> bool:
    return not str(module.__file__).endswith(".py")


def test_the_kernels_are_few_and_include_the_detector() -> None:
    names = {p.stem for p in KERNELS}
    assert {"regime_detector", "surprise_detector"} <= names
    assert len(names) <= 5, "a kernel must measurably pay for its build (README)"


def _fake_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A checkout with two kernels, built (empty files stand in for the extensions)."""
    kernels = tmp_path / "pkg" / "kernels"
    kernels.mkdir(parents=True)
    for name in ("a", "b"):
        (kernels / f"{name}.py").write_text(f"VALUE = {name!r}\n")
        built = tmp_path / "build" / "kernels" / "pkg" / "kernels"
        built.mkdir(parents=True, exist_ok=True)
        (built / f"{name}{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    write_manifest(tmp_path / "build" / "kernels", kernel_digests(kernels, "pkg.kernels"))
    return tmp_path, kernels


def _origin(finder: KernelFinder, name: str) -> str:
    spec = finder.find_spec(name, None)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).name


def test_a_current_build_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMFORGE_PURE_PYTHON", raising=False)
    checkout, kernels = _fake_checkout(tmp_path)
    finder = KernelFinder("pkg.kernels", kernels, checkout)
    assert _origin(finder, "pkg.kernels.a") == "a" + EXTENSION_SUFFIXES[0]
    assert finder.find_spec("pkg.other", None) is None


def test_an_edited_kernel_runs_every_kernel_as_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("STREAMFORGE_PURE_PYTHON", raising=False)
    # (the flow's logging set-up may stop "streamforge" records from reaching the root)
    logging.getLogger("streamforge.compiled").addHandler(caplog.handler)
    checkout, kernels = _fake_checkout(tmp_path)
    (kernels / "b.py").write_text("VALUE = 'edited'\n")
    finder = KernelFinder("pkg.kernels", kernels, checkout)
    # all or none: a kernel's C types are compiled into the kernels that cimport it
    assert (_origin(finder, "pkg.kernels.a"), _origin(finder, "pkg.kernels.b")) == ("a.py", "b.py")
    assert "pkg.kernels.b" in caplog.text and "make install" in caplog.text


def test_without_a_build_the_sources_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMFORGE_PURE_PYTHON", raising=False)
    kernels = tmp_path / "pkg" / "kernels"
    kernels.mkdir(parents=True)
    (kernels / "a.py").write_text("VALUE = 1\n")
    (kernels / f"a{EXTENSION_SUFFIXES[0]}").write_bytes(b"")  # an in-place leftover: ignored
    assert _origin(KernelFinder("pkg.kernels", kernels, tmp_path), "pkg.kernels.a") == "a.py"


def test_the_pure_switch_wins_over_a_current_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout, kernels = _fake_checkout(tmp_path)
    monkeypatch.setenv("STREAMFORGE_PURE_PYTHON", "1")
    assert _origin(KernelFinder("pkg.kernels", kernels, checkout), "pkg.kernels.a") == "a.py"


def _series(rng: random.Random) -> list[float]:
    """One random series mixing what the detector must handle: noise, spikes,
    level shifts, drift, regime switches and stuck stretches."""
    level, values = rng.uniform(-100, 100), []
    noise = rng.choice([0.0, 0.01, 1.0, 25.0])
    for i in range(rng.randint(50, 900)):
        roll = rng.random()
        if roll < 0.01:
            level += rng.choice([-1, 1]) * rng.uniform(1, 50) * (noise + 1)
        if roll > 0.995:
            values.append(level + rng.choice([-1, 1]) * 100 * (noise + 1))  # a spike
        elif 300 < i < 340 and noise > 1:
            values.append(values[-1])  # stuck
        else:
            values.append(level + rng.gauss(0, noise) + 0.001 * i)
    return values


def _plain_state(detector: object) -> tuple[object, ...]:
    """A detector's snapshot with each regime as its tuple of fields (comparable)."""
    state = detector.__getstate__()  # type: ignore[attr-defined]
    return tuple(
        [m.fields() for m in v] if isinstance(v, list) and v and hasattr(v[0], "fields") else v
        for v in state
    )


def test_detector_scores_equal_in_both_builds() -> None:
    compiled = importlib.import_module("flows.kernels.regime_detector")
    if not is_compiled(compiled):
        pytest.skip("the kernels run as pure Python here (not built)")
    pure = load_pure("flows/kernels/regime_detector.py")
    rng = random.Random(7)
    scored = 0
    for params in [{}, {"max_regimes": 1}, {"warmup": 0, "sensitivity": 1.5}, {"accept_after": 3}]:
        for _ in range(40):
            a, b = compiled.RegimeDetector(**params), pure.RegimeDetector(**params)
            for i, x in enumerate(_series(rng)):
                sa, sb = a.score_one(float(i), x), b.score_one(float(i), x)
                assert sa == sb or (math.isnan(sa) and math.isnan(sb)), (params, i, x, sa, sb)
                scored += 1
            assert _plain_state(a) == _plain_state(b)
    assert scored > 50_000


def test_detector_state_moves_between_builds() -> None:
    compiled = importlib.import_module("flows.kernels.regime_detector")
    if not is_compiled(compiled):
        pytest.skip("the kernels run as pure Python here (not built)")
    pure = load_pure("flows/kernels/regime_detector.py")
    values = _series(random.Random(3))
    half = len(values) // 2
    a = compiled.RegimeDetector()
    for i, x in enumerate(values[:half]):
        a.score_one(float(i), x)
    restored = pickle.loads(pickle.dumps(a))  # as Bytewax recovery does
    assert type(restored) is compiled.RegimeDetector
    b = pure.RegimeDetector.__new__(pure.RegimeDetector)
    b.__setstate__(pickle.loads(pickle.dumps(a.__getstate__())))  # (a copy: no shared lists)
    for i, x in enumerate(values[half:], start=half):
        s = restored.score_one(float(i), x)
        assert s == b.score_one(float(i), x)
        assert s == a.score_one(float(i), x)


def _onoff(rng: random.Random) -> list[float]:
    """An on/off machine with flat stretches, ramps and the odd spike: the memory's cases."""
    values: list[float] = []
    while len(values) < 2500:
        on = len(values) // rng.choice([97, 150]) % 2 == 1
        v = 40.0 + rng.gauss(0, 0.5) if on else 0.0
        values.append(v + (30.0 if rng.random() < 0.002 else 0.0))
    return values


def test_surprise_detector_scores_equal_in_both_builds() -> None:
    compiled = importlib.import_module("flows.kernels.surprise_detector")
    if not is_compiled(compiled):
        pytest.skip("the kernels run as pure Python here (not built)")
    pure = load_pure("flows/kernels/surprise_detector.py")
    rng = random.Random(8)
    scored = 0
    for params in [{}, {"warmup": 0, "sensitivity": 1.5}, {"warmup": 20}]:
        for k in range(40):
            a, b = compiled.SurpriseKernel(**params), pure.SurpriseKernel(**params)
            values = _onoff(rng) if k % 4 == 0 else _series(rng)
            values += [math.nan, math.inf, 0.0]
            for i, x in enumerate(values):
                sa, sb = a.score_learn_one(float(i), x), b.score_learn_one(float(i), x)
                assert sa == sb, (params, i, x, sa, sb)
                assert a._step(x, False) == b._step(x, False)
                scored += 1
            assert a.__getstate__() == b.__getstate__()
    assert scored > 50_000


def test_surprise_detector_state_moves_between_builds() -> None:
    compiled = importlib.import_module("flows.kernels.surprise_detector")
    if not is_compiled(compiled):
        pytest.skip("the kernels run as pure Python here (not built)")
    pure = load_pure("flows/kernels/surprise_detector.py")
    from flows.anomaly import SurpriseDetector

    values = _onoff(random.Random(4))
    half = len(values) // 2
    a = SurpriseDetector()  # the river class on the compiled kernel
    for i, x in enumerate(values[:half]):
        a.score_learn_one(float(i), x)
    restored = pickle.loads(pickle.dumps(a))  # as Bytewax recovery does
    assert type(restored) is SurpriseDetector
    b = pure.SurpriseKernel()
    b.__setstate__(a.__getstate__())
    for i, x in enumerate(values[half:], start=half):
        s = restored.score_learn_one(float(i), x)
        assert s == b.score_learn_one(float(i), x)
        assert s == a.score_learn_one(float(i), x)


def _imported_in_subprocess(pure: str) -> dict[str, object]:
    code = (
        "import json, flows.ingest, flows.kernels.series, flows.kernels.regime_detector\n"
        "from connectors.runtime.compiled import compiled_modules\n"
        "print(json.dumps({'compiled': compiled_modules(),"
        " 'detector': flows.kernels.regime_detector.__file__}))"
    )
    env = dict(os.environ, STREAMFORGE_PURE_PYTHON=pure)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_pure_python_switch_loads_sources_only() -> None:
    result = _imported_in_subprocess("1")
    assert result["compiled"] == []
    assert str(result["detector"]).endswith("flows/kernels/regime_detector.py")


def test_compiled_modules_lists_the_extensions_in_use() -> None:
    if not is_compiled(importlib.import_module("flows.kernels.regime_detector")):
        pytest.skip("no extensions built here")
    result = _imported_in_subprocess("0")
    compiled = result["compiled"]
    assert isinstance(compiled, list)
    kernels = {f"flows.kernels.{p.stem}" for p in KERNELS}
    assert {"flows.kernels.regime_detector", "flows.kernels.series"} <= set(compiled)
    assert set(compiled) <= kernels, "only the kernels are ever compiled"


def test_snapshots_pickled_before_the_kernels_moved_still_load() -> None:
    """Recovery stores written when the kernels were flows.series, flows.rollups, ..."""
    from flows.kernels.regime_detector import RegimeDetector
    from flows.kernels.rollups import RollupState
    from flows.kernels.series import SeriesState

    state = SeriesState("telemetry")
    state.rollups = RollupState([("1m", 60.0)], 0.0, 0.0)
    state.detector = RegimeDetector()
    # protocol 2 names modules as plain text, so the old names can be written in
    snapshot = pickle.dumps(state, protocol=2)
    old = snapshot.replace(b"flows.kernels.", b"flows.")
    assert old != snapshot
    restored = pickle.loads(old)
    assert type(restored) is SeriesState
    assert type(restored.rollups) is RollupState and type(restored.detector) is RegimeDetector
