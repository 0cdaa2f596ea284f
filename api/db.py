"""The API's database access: a connection pool and per-request tenant transactions.

>>> db = Database("postgresql://streamforge:streamforge@127.0.0.1:5433/streamforge")
>>> db.role, db.pool.closed                # nothing connects before open()
('streamforge_api', True)
>>> _ENTER                                 # the first statement of every request transaction
"SELECT set_config('role', %s, true), set_config('streamforge.tenant', %s, true)"
>>> import asyncio
>>> async def demo() -> None:
...     await db.open()
...     async with db.tenant("plant-a") as conn:
...         await conn.execute("SELECT count(*) FROM readings")  # plant-a's rows only
...     await db.close()
>>> asyncio.run(demo())  # doctest: +SKIP

Every request transaction starts with ``SET LOCAL ROLE streamforge_api``
and ``SET LOCAL streamforge.tenant = <tenant>`` (one statement, both through
``set_config``): the role owns no table, so the row-level security policies
of ``schemas/sql/003_rls.sql`` confine every statement to the tenant, in
the database and not only in the API's own SQL. Both settings end with the
transaction, so a pooled connection never carries a tenant to the next
request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from connectors.runtime.logs import get_logger
from connectors.timescale.migrate import migrate

log = get_logger("api.db")

_ENTER = "SELECT set_config('role', %s, true), set_config('streamforge.tenant', %s, true)"


class DatabaseSetupError(RuntimeError):
    """The database cannot serve the API safely (e.g. the API role is missing)."""


class Database:
    """A pool of connections as the application user; requests run as the API role."""

    def __init__(
        self, url: str, role: str = "streamforge_api", min_size: int = 2, max_size: int = 10
    ) -> None:
        self.url = url
        self.role = role
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = (
            AsyncConnectionPool(
                url,
                min_size=min_size,
                max_size=max_size,
                open=False,
                # A connection broken by a database restart is replaced at
                # checkout instead of failing the request that drew it.
                check=AsyncConnectionPool.check_connection,
                kwargs={
                    "autocommit": True,
                    "row_factory": dict_row,
                    "application_name": "streamforge-api",
                },
                connection_class=psycopg.AsyncConnection[dict[str, Any]],
            )
        )

    async def open(self) -> None:
        """Open the pool (does not wait for the database: /readyz tells)."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        """Close every connection."""
        await self.pool.close()

    def prepare(self, apply_migrations: bool = True) -> None:
        """Migrate, grant the API role its rights and check it exists (blocking; at start-up).

        Raises :class:`DatabaseSetupError` when the role is missing: the API
        never runs its queries as the tables' owner, which would bypass RLS.
        """
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            if apply_migrations:
                migrate(conn)
            row = conn.execute("SELECT streamforge_api_grants()").fetchone()
            if not row or not row[0]:
                raise DatabaseSetupError(
                    f"database role {self.role} does not exist; as a superuser run: CREATE ROLE "
                    f"{self.role} NOLOGIN NOINHERIT; GRANT {self.role} TO <the API's user>"
                )
            try:
                with conn.transaction():
                    conn.execute(_ENTER, (self.role, ""))
            except psycopg.Error as exc:
                raise DatabaseSetupError(
                    f"the API's database user cannot SET ROLE {self.role}: {exc}; "
                    f"as a superuser run: GRANT {self.role} TO <the API's user>"
                ) from exc

    @asynccontextmanager
    async def tenant(self, tenant: str) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A connection inside a transaction confined to ``tenant`` (commit on success)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_ENTER, (self.role, tenant))
            yield conn

    @asynccontextmanager
    async def anonymous(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A transaction as the API role with no tenant: sees no tenant's rows."""
        async with self.tenant("") as conn:
            yield conn

    async def ping(self) -> None:
        """Raise unless the database answers."""
        async with self.pool.connection(timeout=3.0) as conn:
            await conn.execute("SELECT 1")
