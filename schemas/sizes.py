"""Sizes in configuration: ``"64KiB"``, ``"16MiB"``, ``"1GiB"``, ``"2GB"`` or a number of bytes.

>>> parse_size("16MiB"), parse_size("1.5 GB"), parse_size(4096)
(16777216, 1500000000, 4096)

Its own module, importing nothing of StreamForge, as :mod:`schemas.durations`.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_UNIT_BYTES = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}


def parse_size(text: str | int | float) -> int:
    """Bytes in a size such as ``"64KiB"``, ``"1GiB"``, ``"500MB"`` or a number."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text)
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size like 4096, 64KiB, 16MiB, 1GiB or 500MB")
    return int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])
