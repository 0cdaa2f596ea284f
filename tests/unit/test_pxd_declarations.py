"""Each ``.pxd`` file agrees with the Python source it types.

Cython compiles a kernel's ``.py`` with the C declarations of the ``.pxd``
beside it: an extension type's fields are listed again there, next to the
class's ``__slots__``. When the two disagree the build breaks, or worse, a
field exists in one build and not in the other. These tests read both files
(no build needed) and fail naming the field, the class and the file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PXD_FILES = sorted(
    p for pkg in ("flows", "connectors", "schemas") for p in (ROOT / pkg).rglob("*.pxd")
)

_CLASS = re.compile(r"^cdef class (\w+)")
_FIELD = re.compile(r"^    cdef (?:public |readonly )?[\w.]+ ([\w, ]+)$")
_FUNCTION = re.compile(r"^(?:cpdef|cdef) (?:[\w.]+ )?(\w+)\(")


def pxd_declarations(text: str) -> tuple[dict[str, set[str]], set[str]]:
    """The fields of each ``cdef class`` and the names of the module-level functions.

    >>> pxd_declarations("cdef class A:\\n    cdef public double x, y\\ncpdef f(A a)\\n")
    ({'A': {'x', 'y'}}, {'f'})
    """
    classes: dict[str, set[str]] = {}
    functions: set[str] = set()
    current: str | None = None
    for line in text.splitlines():
        if match := _CLASS.match(line):
            current = match.group(1)
            classes[current] = set()
        elif line and not line.startswith((" ", "#")):
            current = None
            if match := _FUNCTION.match(line):
                functions.add(match.group(1))
        elif current is not None and (match := _FIELD.match(line.rstrip())):
            classes[current] |= {name.strip() for name in match.group(1).split(",")}
    return classes, functions


def python_definitions(source: str) -> tuple[dict[str, set[str]], set[str]]:
    """The fields of each class and the module-level function names of a ``.py``.

    A class's fields are its ``__slots__``, or without them every ``self.name``
    its methods assign (an extension type has no ``__dict__`` for the rest).
    """
    tree = ast.parse(source)
    fields: dict[str, set[str]] = {}
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        assigned = {
            target.attr
            for item in ast.walk(node)
            if isinstance(item, ast.Assign | ast.AnnAssign | ast.AugAssign)
            for target in (item.targets if isinstance(item, ast.Assign) else [item.target])
            if isinstance(target, ast.Attribute) and getattr(target.value, "id", "") == "self"
        }
        fields[node.name] = assigned
        for item in node.body:
            if (
                isinstance(item, ast.Assign)
                and any(getattr(t, "id", "") == "__slots__" for t in item.targets)
                and isinstance(item.value, ast.Tuple | ast.List)
            ):
                fields[node.name] = {ast.literal_eval(e) for e in item.value.elts}
    return fields, functions


def test_there_are_pxd_files_to_check() -> None:
    assert PXD_FILES, "no .pxd file found: the kernels lost their C declarations"


@pytest.mark.parametrize("pxd", PXD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pxd_matches_its_python_source(pxd: Path) -> None:
    source = pxd.with_suffix(".py")
    assert source.exists(), f"{pxd.name} declares a module that has no {source.name}"
    classes, functions = pxd_declarations(pxd.read_text())
    slots, defined = python_definitions(source.read_text())
    for name, fields in classes.items():
        assert name in slots, f"{pxd.name}: cdef class {name} has no class in {source.name}"
        assert fields == slots[name], (
            f"{pxd.name} and {source.name} disagree on the fields of {name}: "
            f"only in the .pxd {sorted(fields - slots[name])}, "
            f"only in __slots__ {sorted(slots[name] - fields)}"
        )
    missing = sorted(functions - defined)
    assert not missing, f"{pxd.name} declares functions {source.name} does not define: {missing}"


def test_a_disagreement_is_caught() -> None:
    classes, _ = pxd_declarations("cdef class A:\n    cdef public double x, y\n")
    slots, _ = python_definitions("class A:\n    __slots__ = ('x', 'z')\n")
    assert classes["A"] != slots["A"]
