"""``python -m api.keys``: create, list and revoke API keys from the command line.

The first admin credential of a tenant is made here (the key is printed
once; the database keeps only its SHA-256)::

    python -m api.keys create --tenant default --role admin --name bootstrap
    python -m api.keys list --tenant default
    python -m api.keys revoke sfk_1a2b3c4d

It connects as the application user (``STREAMFORGE_DATABASE_URL`` or
``--database-url``), applies pending migrations, and writes ``api_keys``
directly: whoever can run this can already read the database.
:func:`create_key` checks its arguments before it touches the database:

>>> create_key(None, "plant-a", "root")
Traceback (most recent call last):
    ...
ValueError: role must be one of viewer, operator, admin
"""

from __future__ import annotations

import argparse
import sys

import psycopg

from api.auth import ROLES, hash_api_key, key_id, new_api_key
from connectors.timescale.migrate import migrate
from schemas.settings import Settings


def create_key(conn: psycopg.Connection, tenant: str, role: str, name: str = "") -> str:
    """Store a new key for ``tenant`` with ``role``; returns the key (the only time it is seen)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not 1 <= len(tenant) <= 200:
        raise ValueError("tenant must be 1 to 200 characters")
    key = new_api_key()
    conn.execute(
        "INSERT INTO api_keys (id, tenant, role, name, key_hash) VALUES (%s, %s, %s, %s, %s)",
        (key_id(key), tenant, role, name, hash_api_key(key)),
    )
    return key


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m api.keys``."""
    parser = argparse.ArgumentParser(prog="python -m api.keys", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: $STREAMFORGE_DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", default="")
    listing = sub.add_parser("list", help="list the keys of a tenant")
    listing.add_argument("--tenant", required=True)
    revoke = sub.add_parser("revoke", help="revoke a key by its id (sfk_xxxxxxxx)")
    revoke.add_argument("id")
    args = parser.parse_args(argv)
    url = args.database_url or Settings().database_url
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            if args.command == "create":
                key = create_key(conn, args.tenant, args.role, args.name)
                print(key)
                print(
                    f"# {key_id(key)}: {args.role} of tenant {args.tenant!r}. Store it now: "
                    "only its hash is kept.",
                    file=sys.stderr,
                )
            elif args.command == "list":
                rows = conn.execute(
                    "SELECT id, role, name, created_at, revoked_at FROM api_keys"
                    " WHERE tenant = %s ORDER BY created_at",
                    (args.tenant,),
                ).fetchall()
                for kid, role, name, created, revoked in rows:
                    state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
                    print(f"{kid}\t{role}\t{state}\tcreated {created:%Y-%m-%d %H:%M}\t{name}")
            else:
                cur = conn.execute(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s",
                    (args.id,),
                )
                if cur.rowcount == 0:
                    print(f"no key {args.id}", file=sys.stderr)
                    return 1
                print(f"revoked {args.id}")
    except psycopg.Error as exc:
        print(f"api.keys: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
