"""Which StreamForge modules run compiled, and a switch to run them all as Python.

setup.py compiles the hot per-series modules with Cython; Python then imports
the extension in preference to the ``.py`` beside it. Setting
``STREAMFORGE_PURE_PYTHON=1`` makes this process import the ``.py`` sources
instead (installed by the ``__init__.py`` of ``flows``, ``connectors`` and
``schemas`` before any of their modules load): for tracebacks with source lines, for a
debugger, or to compare the two builds (``tests/bench/bench_pipeline.py``).
The same variable at install time skips building the extensions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from types import ModuleType

PACKAGES = ("flows", "connectors", "schemas")


def pure_python_requested() -> bool:
    """True when ``STREAMFORGE_PURE_PYTHON`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get("STREAMFORGE_PURE_PYTHON", "") not in ("", "0")


class SourceFirstFinder(MetaPathFinder):
    """Finds the modules of :data:`PACKAGES` as ``.py`` sources, never as extensions."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """The source spec of a submodule of our packages (others: not ours to find)."""
        if path is None or fullname.split(".", 1)[0] not in PACKAGES or "." not in fullname:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def install_if_requested() -> None:
    """Put :class:`SourceFirstFinder` first on ``sys.meta_path`` if pure Python was asked for."""
    if pure_python_requested() and not any(isinstance(f, SourceFirstFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFirstFinder())


def compiled_modules() -> list[str]:
    """The loaded modules of our packages that run from a compiled extension, sorted."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.split(".", 1)[0] in PACKAGES
        and str(getattr(module, "__file__", "") or "").endswith((".so", ".pyd"))
    )
