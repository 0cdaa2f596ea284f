"""Build hook: compiles StreamForge's kernels, the modules of ``flows/kernels/``, with Cython.

Everything else about the package is in pyproject.toml. A kernel is an
ordinary Python module; Cython compiles the same source (typed by the
``.pxd`` beside it, if any) into an extension module. The C files go to
``build/cython/``, never beside the sources. Two ways to build:

- ``pip install .`` / ``pip wheel .``: the extensions go into the package,
  beside their ``.py``, as usual;
- ``python setup.py build_kernels`` (``make install``, for a source
  checkout): into ``build/kernels/`` with a manifest of the sources they
  were built from, so that an edited kernel runs as Python until rebuilt
  (``connectors/runtime/compiled.py`` explains how they are found).

Where they cannot be built (no C compiler, or ``STREAMFORGE_PURE_PYTHON=1``)
the package installs and runs as pure Python, only slower: each extension
is optional.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
KERNEL_PACKAGE = "flows.kernels"
KERNEL_DIR = Path("flows") / "kernels"


def _compiled_rules() -> ModuleType:
    """connectors/runtime/compiled.py, loaded by path: the package cannot be imported yet."""
    spec = importlib.util.spec_from_file_location(
        "_streamforge_compiled", HERE / "connectors" / "runtime" / "compiled.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernel_sources() -> list[str]:
    """The modules to compile: every module of flows/kernels/."""
    return sorted(str(p) for p in KERNEL_DIR.glob("*.py") if p.name != "__init__.py")


def compiled_extensions() -> list[Extension]:
    """The Cython extensions to build, or none when pure Python is wanted or forced."""
    if _compiled_rules().pure_python_requested():
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("streamforge: Cython not available, installing pure Python", file=sys.stderr)
        return []
    extensions = cythonize(
        kernel_sources(),
        build_dir="build/cython",
        nthreads=os.cpu_count() or 1,
        # annotation_typing off: annotations stay hints (a "float" parameter must not
        # turn an int argument into a float); C types come from the .pxd files only.
        compiler_directives={"language_level": "3", "annotation_typing": False},
        quiet=True,
    )
    for extension in extensions:
        extension.optional = True  # a failed C build leaves the pure-Python module in use
    return extensions


class BuildKernels(build_ext):
    """``python setup.py build_kernels``: the extensions into build/kernels/, with a manifest."""

    description = "compile the kernels into build/kernels/ for a source checkout"

    def finalize_options(self) -> None:
        self.build_lib = self.build_lib or str(_compiled_rules().BUILD_DIR)
        self.build_temp = self.build_temp or str(Path("build") / "temp")
        self.inplace = False
        super().finalize_options()

    def run(self) -> None:
        rules = _compiled_rules()
        digests = rules.kernel_digests(KERNEL_DIR, KERNEL_PACKAGE)  # the sources as built
        super().run()
        rules.write_manifest(Path(self.build_lib), digests)


setup(
    ext_modules=compiled_extensions(),
    cmdclass={"build_kernels": BuildKernels},
    # parallel: the C compiles take most of an install.
    options={
        "build_ext": {"parallel": os.cpu_count() or 1},
        "build_kernels": {"parallel": os.cpu_count() or 1},
    },
)
