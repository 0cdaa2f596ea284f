"""What changed between two flow configs, and a JSON merge patch applied to one.

A version's ``diff`` lists every changed leaf as ``{path, old, new}``: dicts
are compared key by key, anything else (numbers, strings, lists) as a whole;
``old`` or ``new`` is missing for a field added or removed:

>>> before = {"anomaly": {"threshold": 0.9}, "sources": [{"type": "simulator"}]}
>>> after = {"anomaly": {"threshold": 0.95, "hold": 3}, "sources": [{"type": "mqtt"}]}
>>> for change in config_diff(before, after):
...     print(change)
{'path': 'anomaly.hold', 'new': 3}
{'path': 'anomaly.threshold', 'old': 0.9, 'new': 0.95}
{'path': 'sources', 'old': [{'type': 'simulator'}], 'new': [{'type': 'mqtt'}]}

``PATCH /flows/{name}`` takes a JSON merge patch (RFC 7396): objects merge,
``null`` removes a field (it takes its default again), anything else replaces:

>>> merge_patch({"anomaly": {"threshold": 0.9, "hold": 3}, "tenant": "t"},
...             {"anomaly": {"threshold": 0.95, "hold": None}})
{'anomaly': {'threshold': 0.95}, 'tenant': 't'}
"""

from __future__ import annotations

from typing import Any


def config_diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """The changed leaves from ``old`` to ``new``, sorted by path."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(set(old) | set(new)):
            where = f"{path}.{key}" if path else str(key)
            if key not in old:
                changes.append({"path": where, "new": new[key]})
            elif key not in new:
                changes.append({"path": where, "old": old[key]})
            else:
                changes.extend(config_diff(old[key], new[key], where))
        return changes
    if old == new and type(old) is type(new):
        return []
    return [{"path": path or "(config)", "old": old, "new": new}]


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the RFC 7396 merge ``patch`` applied (neither is modified)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
