"""Versioned SQL migrations of StreamForge's database, each applied once.

Apply them from the command line (idempotent: a second run changes nothing)::

    python -m connectors.timescale.migrate                       # Settings().database_url
    python -m connectors.timescale.migrate --database-url postgresql://user:pw@host:5432/db

or from code; the TimescaleDB sink does it on start unless
``apply_migrations_on_start`` is off:

>>> [m.name for m in load_migrations()][:2]
['001_core', '002_hypertables']

Migrations are the files ``schemas/sql/NNN_name.sql``, applied in order of
``NNN``, each in its own transaction together with its row in the
``schema_migrations`` table (version, name, checksum, applied_at). The whole
run holds a PostgreSQL advisory lock, so two processes starting together
(several Bytewax workers, the API) apply each migration once: the second
waits, then finds nothing left to do. A migration changed after it was
applied (its checksum differs) stops the run with :class:`MigrationError`:
write a new migration instead of editing an old one.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import psycopg

from connectors.runtime.logs import get_logger

SQL_DIR = Path(str(files("schemas").joinpath("sql")))  # the SQL stays with the schemas
"""Where the migration files live."""

LOCK_KEY = 0x5354_5246_4D49_4752  # "STRFMIGR": any constant shared by every StreamForge process
"""The advisory lock key taken while migrating."""

_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

log = get_logger("connectors.timescale.migrate")


class MigrationError(RuntimeError):
    """The migrations cannot be applied (bad files, or an applied one was changed)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version (the ``NNN`` prefix), name, SQL and checksum."""

    version: int
    name: str
    sql: str
    checksum: str


def load_migrations(directory: Path = SQL_DIR) -> list[Migration]:
    """The migrations in ``directory``, in version order; raises on a malformed set."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        sql = path.read_text(encoding="utf-8")
        found.append(
            Migration(
                version=int(match.group(1)),
                name=path.stem,
                sql=sql,
                checksum=hashlib.sha256(sql.encode()).hexdigest(),
            )
        )
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}: {versions}")
    return found


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def migrate(conn: psycopg.Connection | str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the pending migrations; return the names of those applied (empty if none).

    ``conn`` is an open connection (it must not be inside a transaction; it
    is left in its original autocommit mode) or a connection URL.
    """
    if isinstance(conn, str):
        with psycopg.connect(conn, autocommit=True) as own:
            return migrate(own, migrations)
    migrations = load_migrations() if migrations is None else migrations
    was_autocommit = conn.autocommit
    # Session-level lock and one transaction per migration need autocommit:
    # otherwise the lock query would open a transaction around everything.
    conn.autocommit = True
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            return _apply_pending(conn, migrations)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        if not conn.closed:
            conn.autocommit = was_autocommit


def _apply_pending(conn: psycopg.Connection, migrations: list[Migration]) -> list[str]:
    conn.execute(_CREATE_TABLE)
    rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    applied = {version: (name, checksum) for version, name, checksum in rows}
    done: list[str] = []
    for m in migrations:
        if m.version in applied:
            name, checksum = applied[m.version]
            if checksum != m.checksum:
                raise MigrationError(
                    f"migration {m.name} differs from the one applied as {name}; "
                    "never edit an applied migration, add a new one"
                )
            continue
        with conn.transaction():
            # No parameters: psycopg sends the file as one simple query, so
            # it may hold several statements and DO blocks.
            conn.execute(m.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
        log.info("migration applied", extra={"step": "migrate", "migration": m.name})
        done.append(m.name)
    return done


def main(argv: list[str] | None = None) -> int:
    """``python -m connectors.timescale.migrate``: apply pending migrations, print what was done."""
    parser = argparse.ArgumentParser(
        prog="python -m connectors.timescale.migrate",
        description="Apply StreamForge's SQL migrations.",
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (default: $STREAMFORGE_DATABASE_URL or Settings)"
    )
    args = parser.parse_args(argv)
    if args.database_url:
        url = args.database_url
    else:
        from schemas.settings import Settings

        url = Settings().database_url
    try:
        applied = migrate(url)
    except (MigrationError, psycopg.Error) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    if applied:
        print("applied: " + ", ".join(applied))
    else:
        print(f"up to date ({len(load_migrations())} migrations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
