"""The device registry's pure parts: bulk import parsing, device status, value ranges.

:func:`parse_import` turns the body of ``POST /devices/import`` into
validated :class:`schemas.devices.DeviceRegistration` s, or raises
:class:`RejectedImportError` naming every bad row (its CSV line or list index,
the field and what is wrong): an import is all or nothing.

>>> body = (b"device,type,tags,metrics\\n"
...         b"press-1,press,line-1;north,temperature:degC:0:120;rpm:1/min::\\n")
>>> (press,) = parse_import(body, "text/csv")
>>> press.type, press.tags, press.metrics["temperature"].max, press.metrics["rpm"].unit
('press', ['line-1', 'north'], 120.0, '1/min')
>>> try:
...     parse_import(b"- device: press-1\\n- device: pump/2\\n  tags: [a]\\n", "application/yaml")
... except RejectedImportError as exc:
...     print(exc.message)
...     print(exc.problems[0].index, exc.problems[0].field, exc.problems[0].message)
1 of 2 devices are invalid; nothing was imported
1 device String should match pattern '^[^\\x00/]+$'

A device's status comes from the age of the newest thing it sent:

>>> from datetime import UTC, datetime, timedelta
>>> now = datetime(2026, 1, 1, tzinfo=UTC)
>>> [device_status(now - timedelta(seconds=s), now, 120, 3600) for s in (5, 600, 7200)]
['online', 'stale', 'offline']
>>> device_status(None, now, 120, 3600)
'unknown'
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from api.params import storable_json
from schemas.devices import DeviceRegistration, MetricSpec

MAX_IMPORT_BYTES = 5 * 1024 * 1024
"""The largest body ``POST /devices/import`` reads (413 beyond)."""
MAX_IMPORT_DEVICES = 10_000
"""The most devices one import may hold (422 beyond): one transaction stays short."""

CSV_COLUMNS = ("device", "name", "type", "area", "tags", "metrics")
"""The columns a CSV import may have (``device`` is required; any order)."""

MEDIA_TYPES = {
    "text/csv": "csv",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
    "application/json": "json",
}
"""The Content-Types an import accepts, and the format each means."""

DeviceStatus = Literal["online", "stale", "offline", "unknown"]

# The C loader is the same safe loader (no Python objects, no tags that run
# code), several times faster than yaml.safe_load's pure-Python one on a 5 MiB body.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """One reason a row of an import is refused."""

    line: int | None
    """The CSV line (the header is line 1), or None."""
    index: int | None
    """The position in a YAML/JSON list (from 0), or None."""
    device: str | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, as the 422 answer lists it."""
        return {
            "line": self.line,
            "index": self.index,
            "device": self.device,
            "field": self.field,
            "message": self.message,
        }


class RejectedImportError(ValueError):
    """The import cannot be taken: why, and each bad row (may be empty for a whole-body error)."""

    def __init__(self, message: str, problems: Iterable[ImportProblem] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)


class UnsupportedMediaTypeError(ValueError):
    """The body's Content-Type is none of :data:`MEDIA_TYPES` (a 415)."""


def import_format(content_type: str | None) -> str:
    """``csv``, ``yaml`` or ``json`` from a Content-Type header (parameters ignored).

    >>> import_format("text/csv; charset=utf-8"), import_format("Application/X-YAML")
    ('csv', 'yaml')
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        return MEDIA_TYPES[media]
    except KeyError:
        accepted = ", ".join(MEDIA_TYPES)
        raise UnsupportedMediaTypeError(
            f"Content-Type {media or '(none)'!r} is not an import format; send one of {accepted}"
        ) from None


def parse_metrics_cell(cell: str) -> dict[str, dict[str, Any]]:
    """The ``metrics`` cell of a CSV row: ``name:unit:min:max`` entries separated by ``;``.

    Every part but the name may be empty or left out.

    >>> parse_metrics_cell("temperature:degC:0:120;rpm:1/min::;vibration")
    {'temperature': {'unit': 'degC', 'min': 0.0, 'max': 120.0}, 'rpm': {'unit': '1/min'}, \
'vibration': {}}
    >>> parse_metrics_cell("temperature:degC:cold")
    Traceback (most recent call last):
        ...
    ValueError: temperature: min 'cold' is not a number
    """
    metrics: dict[str, dict[str, Any]] = {}
    for entry in cell.split(";"):
        if not entry.strip():
            continue
        parts = [p.strip() for p in entry.split(":")]
        if len(parts) > 4:
            raise ValueError(f"{entry!r}: write name:unit:min:max (no ':' in a unit)")
        name, rest = parts[0], [*parts[1:], "", "", ""][:3]
        if not name:
            raise ValueError(f"{entry!r}: the metric name is missing")
        if name in metrics:
            raise ValueError(f"{name}: listed twice")
        spec: dict[str, Any] = {}
        if rest[0]:
            spec["unit"] = rest[0]
        for key, text in (("min", rest[1]), ("max", rest[2])):
            if text:
                try:
                    spec[key] = float(text)
                except ValueError:
                    raise ValueError(f"{name}: {key} {text!r} is not a number") from None
        metrics[name] = spec
    return metrics


_Row = tuple[int | None, int | None, Any, tuple[str, str] | None]
"""(CSV line, list index, registration data, (field, message) of an error found reading it)."""


def _csv_rows(text: str) -> Iterator[_Row]:
    """Each CSV row after the header, as registration data."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [c.strip().lower() for c in header]
        unknown = [c for c in columns if c not in CSV_COLUMNS]
        problems = [
            ImportProblem(1, None, None, c or "(empty)", f"unknown column; use {CSV_COLUMNS}")
            for c in unknown
        ]
        if "device" not in columns:
            problems.append(ImportProblem(1, None, None, "device", "the header has no device"))
        twice = sorted({c for c in columns if columns.count(c) > 1})
        problems += [ImportProblem(1, None, None, c, "column listed twice") for c in twice]
        if problems:
            raise RejectedImportError("the CSV header is not usable; nothing imported", problems)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank lines, e.g. at the end of a hand-edited file
            line = reader.line_num
            if len(row) > len(columns):
                error = ("(row)", f"{len(row)} cells for {len(columns)} columns")
                yield line, None, {"device": row[columns.index("device")].strip()}, error
                continue
            cells = {c: row[i].strip() if i < len(row) else "" for i, c in enumerate(columns)}
            data: dict[str, Any] = {"device": cells["device"]}
            for key in ("name", "type", "area"):
                if cells.get(key):
                    data[key] = cells[key]
            if cells.get("tags"):
                data["tags"] = [t.strip() for t in cells["tags"].split(";") if t.strip()]
            if cells.get("metrics"):
                try:
                    data["metrics"] = parse_metrics_cell(cells["metrics"])
                except ValueError as exc:
                    yield line, None, data, ("metrics", str(exc))
                    continue
            yield line, None, data, None
    except csv.Error as exc:
        where = f"line {reader.line_num}"
        raise RejectedImportError(f"not a readable CSV file: {where}: {exc}") from exc


def _document_rows(document: Any) -> list[Any]:
    """The list of registrations of a parsed YAML/JSON document."""
    if isinstance(document, Mapping) and set(document) == {"devices"}:
        document = document["devices"]
    if document is None:
        return []
    if not isinstance(document, list):
        raise RejectedImportError("expected a list of devices, or {devices: [...]}")
    return document


def _problems(
    error: ValidationError, line: int | None, index: int | None, device: Any
) -> list[ImportProblem]:
    name = device if isinstance(device, str) else None
    return [
        ImportProblem(
            line,
            index,
            name,
            ".".join(str(p) for p in e["loc"]) or "(row)",
            e["msg"].removeprefix("Value error, "),
        )
        for e in error.errors()
    ]


def storable_problems(registration: DeviceRegistration) -> list[tuple[str, str]]:
    """(field, message) for what the model accepts but the database cannot hold.

    JSON and YAML carry lone surrogates (``"\\ud800"``) and non-finite
    numbers (``NaN``, ``.inf``); neither fits a text column or jsonb.

    >>> storable_problems(DeviceRegistration(device="p", metrics={"t": {"max": float("inf")}}))
    [('metrics.t.max', 'must be a finite number')]
    """
    found: list[tuple[str, str]] = []
    try:
        storable_json(registration.model_dump(mode="python"))
    except ValueError as exc:
        found.append(("(row)", str(exc)))
    for metric, spec in registration.metrics.items():
        for key in ("min", "max"):
            value = getattr(spec, key)
            if value is not None and not math.isfinite(value):
                found.append((f"metrics.{metric}.{key}", "must be a finite number"))
    return found


def validate_rows(rows: Iterable[_Row]) -> list[DeviceRegistration]:
    """Validate rows: all of them, or :class:`RejectedImportError` naming each bad one.

    A device listed twice is an error on its second row (which one would win
    is not obvious).
    """
    found: list[DeviceRegistration] = []
    problems: list[ImportProblem] = []
    first: dict[str, int | None] = {}
    count = 0
    for line, index, data, error in rows:
        count += 1
        if count > MAX_IMPORT_DEVICES:
            raise RejectedImportError(
                f"more than {MAX_IMPORT_DEVICES} devices in one import; split the file"
            )
        device = data.get("device") if isinstance(data, Mapping) else None
        if error is not None:
            problems.append(ImportProblem(line, index, device, error[0], error[1]))
            continue
        try:
            registration = DeviceRegistration.model_validate(data)
        except ValidationError as exc:
            problems += _problems(exc, line, index, device)
            continue
        bad = storable_problems(registration)
        problems += [ImportProblem(line, index, registration.device, f, m) for f, m in bad]
        if bad:
            continue
        where = line if line is not None else index
        if registration.device in first:
            what = "line" if line is not None else "index"
            problems.append(
                ImportProblem(
                    line, index, registration.device, "device",
                    f"listed twice (first at {what} {first[registration.device]})",
                )
            )  # fmt: skip
            continue
        first[registration.device] = where
        found.append(registration)
    if problems:
        bad_rows = len({(p.line, p.index) for p in problems})
        raise RejectedImportError(
            f"{bad_rows} of {count} devices are invalid; nothing was imported", problems
        )
    return found


def parse_import(body: bytes, media_type: str) -> list[DeviceRegistration]:
    """The registrations of an import body (CSV, YAML or JSON; see :data:`MEDIA_TYPES`).

    :class:`RejectedImportError` when the body cannot be read or any row is
    invalid, :class:`UnsupportedMediaTypeError` for another Content-Type.
    """
    kind = import_format(media_type)
    try:
        text = body.decode("utf-8-sig")  # spreadsheets often start a CSV with a BOM
    except UnicodeDecodeError as exc:
        raise RejectedImportError(f"the body is not UTF-8 text: {exc}") from exc
    if kind == "csv":
        return validate_rows(_csv_rows(text))
    try:
        document = json.loads(text) if kind == "json" else yaml.load(text, Loader=_SafeLoader)
    except (ValueError, yaml.YAMLError) as exc:
        raise RejectedImportError(f"not a readable {kind.upper()} document: {exc}") from exc
    rows = _document_rows(document)
    if len(rows) > MAX_IMPORT_DEVICES:
        raise RejectedImportError(
            f"{len(rows)} devices in one import; at most {MAX_IMPORT_DEVICES}, split the file"
        )
    return validate_rows((None, i, data, None) for i, data in enumerate(rows))


def device_status(
    last_seen: datetime | None, now: datetime, stale_after_s: float, offline_after_s: float
) -> DeviceStatus:
    """``online``, ``stale`` or ``offline`` by the age of the newest thing a device sent.

    ``unknown`` when it never sent anything. A time in the future (a device
    clock ahead) counts as online.
    """
    if last_seen is None:
        return "unknown"
    age = (now - last_seen).total_seconds()
    if age <= stale_after_s:
        return "online"
    return "stale" if age <= offline_after_s else "offline"


def in_range(value: Any, spec: MetricSpec | None) -> bool | None:
    """Whether a value lies within a registered metric's ``[min, max]``; None without a range.

    Only numbers are judged (a boolean or a text value: None); a value that
    is not finite is out of any range.

    >>> spec = MetricSpec(unit="degC", min=0, max=120)
    >>> in_range(71.5, spec), in_range(130, spec), in_range("hot", spec), in_range(5, None)
    (True, False, None, None)
    >>> in_range(-3.0, MetricSpec(max=50.0))
    True
    """
    if spec is None or (spec.min is None and spec.max is None):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return False
    return (spec.min is None or value >= spec.min) and (spec.max is None or value <= spec.max)
