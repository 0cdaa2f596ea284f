"""Build hook: compiles StreamForge's hot per-series modules with Cython.

Everything else about the package is in pyproject.toml. The modules listed
in ``COMPILED`` are ordinary Python; Cython compiles the same source (typed by
the ``.pxd`` file beside it, if any) into an extension module, which Python
imports in preference to the ``.py``. Where that cannot be built (no C
compiler, or ``STREAMFORGE_PURE_PYTHON=1``), the package installs and runs as
pure Python, only slower: the build of each extension is optional.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

# The per-reading hot path, measured with tests/bench/bench_pipeline.py.
COMPILED = [
    "flows/regime_detector.py",
    "flows/rollups.py",
    "flows/series.py",
    "flows/alarms.py",
    "flows/alarm_lifecycle.py",
    "flows/events.py",
    "flows/ingest.py",
    "flows/decode.py",
    "flows/classify.py",
    "connectors/simulator/plant.py",
    "connectors/simulator/model.py",
    "connectors/simulator/devices.py",
    "connectors/kafka/producer.py",
    "connectors/kafka/sink.py",
    "connectors/kafka/source.py",
    "connectors/timescale/writer.py",
    "connectors/timescale/rows.py",
    "connectors/timescale/sink.py",
    "schemas/record_fields.py",
]


def compiled_extensions() -> list[Extension]:
    """The Cython extensions to build, or none when pure Python is wanted or forced."""
    # (the rule of connectors.runtime.compiled.pure_python_requested, not imported: this
    # runs before the package can be imported)
    if os.environ.get("STREAMFORGE_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("streamforge: Cython not available, installing pure Python", file=sys.stderr)
        return []
    extensions = cythonize(
        COMPILED,
        nthreads=os.cpu_count() or 1,
        # annotation_typing off: annotations stay hints (a "float" parameter must not
        # turn an int argument into a float); C types come from the .pxd files only.
        compiler_directives={"language_level": "3", "annotation_typing": False},
        quiet=True,
    )
    for extension in extensions:
        extension.optional = True  # a failed C build leaves the pure-Python module in use
    return extensions


# parallel: the C compiles take most of an install (~1.5 min on one core).
setup(ext_modules=compiled_extensions(), options={"build_ext": {"parallel": os.cpu_count() or 1}})
