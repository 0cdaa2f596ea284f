"""The Cython-compiled hot modules (setup.py) against their own pure-Python source.

Python imports a compiled extension in preference to the ``.py`` beside it,
so the same source runs two ways. These tests load the ``.py`` a second
time under another name and check that both give the same results, that a
detector's state moves between them (a recovery snapshot taken by one build
resumes in the other), and that no extension is older than its source (an
edited ``.py`` would otherwise be silently shadowed by a stale build).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compiled_sources() -> list[str]:
    """The ``COMPILED`` list of setup.py (read, not imported: setup.py runs setup())."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no COMPILED list")


def module_name(source: str) -> str:
    return source.removesuffix(".py").replace("/", ".")


def load_pure(source: str) -> ModuleType:
    """The ``.py`` of a compiled module, executed as a module of its own."""
    name = "_pure_" + module_name(source).replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, ROOT / source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_compiled(module: ModuleType) -> bool:
    return not str(module.__file__).endswith(".py")


def test_compiled_list_names_real_modules() -> None:
    sources = compiled_sources()
    assert "flows/regime_detector.py" in sources
    for source in sources:
        assert (ROOT / source).is_file(), source


@pytest.mark.parametrize("source", compiled_sources())
def test_extension_is_not_older_than_its_source(source: str) -> None:
    module = importlib.import_module(module_name(source))
    if not is_compiled(module):
        pytest.skip(f"{source} runs as pure Python here (no extension built)")
    built = Path(str(module.__file__)).stat().st_mtime
    inputs = [ROOT / source, (ROOT / source).with_suffix(".pxd")]
    for path in inputs:
        if path.exists():
            assert path.stat().st_mtime <= built, (
                f"{path.name} changed after {Path(str(module.__file__)).name} was built: "
                "rebuild with `make install` (or `python setup.py build_ext --inplace`)"
            )


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
    compiled = importlib.import_module("flows.regime_detector")
    if not is_compiled(compiled):
        pytest.skip("flows.regime_detector runs as pure Python here")
    pure = load_pure("flows/regime_detector.py")
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
    compiled = importlib.import_module("flows.regime_detector")
    if not is_compiled(compiled):
        pytest.skip("flows.regime_detector runs as pure Python here")
    pure = load_pure("flows/regime_detector.py")
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


def _imported_in_subprocess(pure: str) -> dict[str, object]:
    code = (
        "import json, flows.series, flows.regime_detector, connectors.simulator.plant\n"
        "from connectors.runtime.compiled import compiled_modules\n"
        "print(json.dumps({'compiled': compiled_modules(),"
        " 'detector': flows.regime_detector.__file__}))"
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
    assert str(result["detector"]).endswith("flows/regime_detector.py")


def test_compiled_modules_lists_the_extensions_in_use() -> None:
    if not is_compiled(importlib.import_module("flows.regime_detector")):
        pytest.skip("no extensions built here")
    result = _imported_in_subprocess("0")
    compiled = result["compiled"]
    assert isinstance(compiled, list)
    assert {"flows.regime_detector", "flows.series", "connectors.simulator.plant"} <= set(compiled)
    assert "connectors.runtime.compiled" not in compiled
