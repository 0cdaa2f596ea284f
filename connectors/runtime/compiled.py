"""Where the compiled kernels come from, which of them run compiled, and the pure-Python switch.

The few hot per-reading modules that pay for being compiled live in one
package, ``flows/kernels/``; setup.py compiles every module there with
Cython (C types from the ``.pxd`` beside a ``.py``). Everything else is
plain Python. How a kernel is imported depends on where it runs:

- **In a source checkout** (``make install``), the extensions are built into
  ``build/kernels/`` with a manifest of the source digests they were built
  from, never beside the sources. :class:`KernelFinder` loads an extension
  only while its ``.py`` and ``.pxd`` are the ones it was built from;
  otherwise it imports the ``.py`` and logs a warning once. An edited
  source is never shadowed by a stale build.
- **In an installed package** (a wheel, the Docker image), the extensions
  sit beside the ``.py`` and Python's own import picks them.
- ``STREAMFORGE_PURE_PYTHON=1`` makes a process import every kernel's
  ``.py``: for tracebacks with source lines, a debugger, or to compare the
  two builds (``tests/bench/bench_pipeline.py``). Set at install time, it
  builds no extension at all.

A kernel moved to this package keeps its old module name as an alias (the
same module object), so recovery snapshots pickled under the old name
resume.

>>> source_digest(Path(__file__)) == source_digest(Path(__file__))
True
>>> finder = KernelFinder("flows.kernels", Path("flows/kernels"), checkout=None)
>>> finder.find_spec("flows.ingest", None) is None   # not a kernel: not ours to find
True
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path
from types import ModuleType

PACKAGES = ("flows", "connectors", "schemas")
"""The packages whose modules :func:`compiled_modules` reports on."""

CHECKOUT = Path(__file__).resolve().parents[2]
"""The folder holding the packages: a source checkout when it has a ``setup.py``."""

BUILD_DIR = Path("build") / "kernels"
"""Where ``python setup.py build_kernels`` puts the extensions, relative to the checkout."""

MANIFEST = "manifest.json"
"""The file in :data:`BUILD_DIR` mapping each built kernel to its sources' digest."""

log = logging.getLogger("streamforge.compiled")


def pure_python_requested() -> bool:
    """True when ``STREAMFORGE_PURE_PYTHON`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get("STREAMFORGE_PURE_PYTHON", "") not in ("", "0")


def source_digest(source: Path) -> str:
    """The SHA-256 of a kernel's ``.py`` and, if there is one, its ``.pxd``."""
    digest = hashlib.sha256(source.read_bytes())
    declarations = source.with_suffix(".pxd")
    if declarations.exists():
        digest.update(declarations.read_bytes())
    return digest.hexdigest()


class KernelFinder(MetaPathFinder):
    """Imports the modules of one kernels package: a current build, or else the ``.py``.

    ``checkout`` is the source checkout the package lives in (None in an
    installed package, where the extensions beside the sources are used).
    """

    def __init__(
        self,
        package: str,
        directory: Path,
        checkout: Path | None,
        aliases: dict[str, str] | None = None,
    ) -> None:
        self.package = package
        self.directory = directory
        self.checkout = checkout
        self.aliases = aliases or {}
        self._build_is_current: bool | None = None  # decided at the first kernel import

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """The spec of a kernel (the extension or the source); None for any other module."""
        if fullname in self.aliases:
            return ModuleSpec(fullname, _Alias(self.aliases[fullname]))
        package, _, name = fullname.rpartition(".")
        if package != self.package:
            return None
        source = self.directory / f"{name}.py"
        if not source.exists():
            return None
        if pure_python_requested():
            return spec_from_file_location(fullname, source)
        if self.checkout is None:
            return None  # installed: Python's own finder picks the extension beside the source
        extension = self._built_extension(source)
        return spec_from_file_location(fullname, extension or source)

    def _built_extension(self, source: Path) -> Path | None:
        """The extension of ``build/kernels`` for a kernel, if the build is current."""
        assert self.checkout is not None
        build = self.checkout / BUILD_DIR
        if self._build_is_current is None:
            self._build_is_current = self._check_build(build)
        if not self._build_is_current:
            return None
        relative = self.directory.relative_to(self.checkout)
        for suffix in EXTENSION_SUFFIXES:
            extension = build / relative / (source.stem + suffix)
            if extension.exists():
                return extension
        return None  # not built (no C compiler): its source

    def _check_build(self, build: Path) -> bool:
        """Whether every kernel's sources are the ones the build was made from."""
        try:
            built = json.loads((build / MANIFEST).read_text())
        except (OSError, ValueError):
            return False  # never built here: every kernel runs as Python
        changed = sorted(
            name
            for name, digest in kernel_digests(self.directory, self.package).items()
            if built.get(name) != digest
        )
        if changed:
            log.warning(
                "kernels changed since they were compiled (%s): running every kernel as "
                "Python (slower) until `make install` rebuilds them",
                ", ".join(changed),
            )
        return not changed


class _Alias(Loader):
    """Loads an old module name as the module it moved to (the same object)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._spec: ModuleSpec | None = None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set the alias's spec on it


def install_kernel_finder(
    package: str, directory: str, aliases: dict[str, str] | None = None
) -> None:
    """Put a :class:`KernelFinder` for ``package`` first on ``sys.meta_path`` (once).

    Called by the parent package's ``__init__``, before any kernel is imported;
    ``aliases`` maps old module names of moved kernels to their new ones.
    """
    if any(isinstance(f, KernelFinder) and f.package == package for f in sys.meta_path):
        return
    checkout = CHECKOUT if (CHECKOUT / "setup.py").exists() else None
    finder = KernelFinder(package, Path(directory).resolve(), checkout, aliases)
    sys.meta_path.insert(0, finder)


def compiled_modules() -> list[str]:
    """The loaded modules of our packages that run from a compiled extension, sorted."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.split(".", 1)[0] in PACKAGES
        and str(getattr(module, "__file__", "") or "").endswith((".so", ".pyd"))
    )


def kernel_digests(kernel_dir: Path, package: str) -> dict[str, str]:
    """The source digest of every kernel of a package (taken before a build)."""
    return {
        f"{package}.{source.stem}": source_digest(source)
        for source in sorted(kernel_dir.glob("*.py"))
        if source.name != "__init__.py"
    }


def write_manifest(build_dir: Path, digests: dict[str, str]) -> None:
    """Record which sources the extensions in ``build_dir`` were built from (after a build)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / MANIFEST).write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")
