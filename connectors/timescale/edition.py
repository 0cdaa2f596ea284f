"""What the database offers: no TimescaleDB, the Apache edition, or the full one.

>>> import psycopg
>>> with psycopg.connect("postgresql://streamforge:streamforge@127.0.0.1:5433/streamforge") as c:
...     detect_edition(c)  # doctest: +SKIP
'apache'

The decision, from the one row the query returns (here from a stand-in
for the connection):

>>> class Answer:
...     def __init__(self, row): self.row = row
...     def execute(self, sql): return self
...     def fetchone(self): return self.row
>>> edition_info(Answer(("2.17.2", True, "apache")))
EditionInfo(edition='apache', installed_version='2.17.2', available=True, license='apache')
>>> [detect_edition(Answer(row)) for row in [(None, True, None), ("2.17.2", True, "timescale")]]
['none', 'timescale']

- ``"none"``: plain PostgreSQL (the extension is not installed in this
  database). Tables are ordinary tables; retention deletes rows by time.
- ``"apache"``: TimescaleDB under the Apache license (e.g. Debian's
  package): hypertables, ``time_bucket``, ``show_chunks`` and
  ``drop_chunks``; retention is our own job dropping whole chunks.
- ``"timescale"``: the Timescale License (community) edition, as in the
  ``timescale/timescaledb`` image: also native compression and retention
  policies, which the sink installs on start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg

Edition = Literal["none", "apache", "timescale"]


@dataclass(frozen=True, slots=True)
class EditionInfo:
    """The edition and what it was decided from."""

    edition: Edition
    installed_version: str | None
    """Version of the extension installed in this database, if any."""
    available: bool
    """The server could install the extension (``pg_available_extensions``)."""
    license: str | None
    """``timescaledb.license`` (``apache`` or ``timescale``), when installed."""


def edition_info(conn: psycopg.Connection) -> EditionInfo:
    """Inspect the database behind ``conn`` (one query; does not commit)."""
    row = conn.execute(
        """
        SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
               EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
               current_setting('timescaledb.license', true)
        """
    ).fetchone()
    assert row is not None
    version, available, license_ = row
    edition: Edition
    if version is None:
        edition = "none"
        license_ = None
    elif license_ == "timescale":
        edition = "timescale"
    else:
        # "apache", or a version too old to say: assume the smaller feature set.
        edition = "apache"
    return EditionInfo(edition, version, bool(available), license_)


def detect_edition(conn: psycopg.Connection) -> Edition:
    """``"none"``, ``"apache"`` or ``"timescale"``: see the module docstring."""
    return edition_info(conn).edition


def hypertables(conn: psycopg.Connection) -> set[str]:
    """Names of the hypertables in the current schema (empty without TimescaleDB)."""
    if edition_info(conn).edition == "none":
        return set()
    rows = conn.execute(
        "SELECT hypertable_name FROM timescaledb_information.hypertables "
        "WHERE hypertable_schema = current_schema()"
    ).fetchall()
    return {name for (name,) in rows}
