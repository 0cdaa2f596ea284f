"""A flow's recovery store, created when missing: ``python -m flows.recovery DIR PARTITIONS``.

Bytewax resumes a flow from a store of SQLite partitions (``-r DIR``) that
must exist before the flow starts; ``python -m bytewax.recovery`` creates
one, but fails on a missing directory and panics on an existing store.
:func:`ensure_recovery_store` is the idempotent version that deployments
call before every start: it creates the directory and the partitions the
first time, keeps an existing store as it is, and says clearly when it
cannot (a store with another partition count, a directory it may not write).

>>> import tempfile
>>> from pathlib import Path
>>> store = Path(tempfile.mkdtemp()) / "recovery"
>>> ensure_recovery_store(store, 2)
'created'
>>> ensure_recovery_store(store, 2)       # every later start: kept as it is
'kept'
>>> ensure_recovery_store(store, 3)
Traceback (most recent call last):
    ...
flows.recovery.RecoveryStoreError: recovery store ... has 2 partitions, not 3: ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bytewax.recovery import init_db_dir


class RecoveryStoreError(RuntimeError):
    """The recovery store cannot be created or does not fit the request."""


def store_partitions(directory: Path) -> int:
    """How many partitions the store in ``directory`` has (0: none, or no directory)."""
    if not directory.is_dir():
        return 0
    return len(list(directory.glob("part-*.sqlite3")))


def ensure_recovery_store(directory: Path, partitions: int) -> str:
    """Create the store with ``partitions`` partitions unless it exists; ``created`` or ``kept``."""
    if partitions < 1:
        raise RecoveryStoreError(f"a recovery store needs at least 1 partition, not {partitions}")
    existing = store_partitions(directory)
    if existing == partitions:
        return "kept"
    if existing:
        raise RecoveryStoreError(
            f"recovery store {directory} has {existing} partitions, not {partitions}: a store "
            "keeps its partition count (use another directory, or delete this one and lose "
            "the state it holds)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, partitions)
    except OSError as exc:
        raise RecoveryStoreError(f"cannot create recovery store {directory}: {exc}") from None
    return "created"


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.recovery DIR PARTITIONS``: exit 0 with the store in place, else 2."""
    parser = argparse.ArgumentParser(prog="python -m flows.recovery", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("partitions", type=int)
    args = parser.parse_args(argv)
    try:
        outcome = ensure_recovery_store(args.directory, args.partitions)
    except RecoveryStoreError as exc:
        print(f"streamforge: {exc}", file=sys.stderr)
        return 2
    print(f"recovery store {args.directory}: {outcome} ({args.partitions} partitions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
