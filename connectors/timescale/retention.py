"""Retention: remove rows older than each table's retention, the best way the database allows.

Run it by hand (the TimescaleDB sink also runs it every ``retention_interval``)::

    python -m connectors.timescale.retention                   # days from the config
    python -m connectors.timescale.retention --days readings=7 --days logs=3

>>> TIME_COLUMNS["rollups"]
'window_start'

What happens per edition (:mod:`connectors.timescale.edition`):

- ``timescale``: hypertables have native retention policies
  (``add_retention_policy``, installed by :func:`ensure_policies`); this job
  only deletes from the ordinary tables (``alarms``, ``alarm_transitions``).
- ``apache``: ``drop_chunks`` on each hypertable, then deletes from the
  ordinary tables. A chunk is dropped once all of it is older than the
  cut-off, so a few rows may outlive their retention by up to one chunk
  interval (1 day for readings, 7 days for most others).
- ``none``: ``DELETE ... WHERE <time column> < cut-off`` everywhere.

``alarms`` (the current state) only loses alarms that were cleared before
the cut-off; a raised alarm stays however old it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import psycopg
import yaml

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter
from connectors.timescale.config import RetentionDays, TimescaleSinkConfig
from connectors.timescale.edition import Edition, detect_edition, hypertables

log = get_logger("connectors.timescale.retention")

REMOVED = counter(
    "streamforge_timescale_retention_removed_total",
    "Chunks dropped or rows deleted by the retention job, by table and method",
)

TIME_COLUMNS: dict[str, str] = {
    "readings": "ts",
    "anomaly_scores": "ts",
    "rollups": "window_start",
    "events": "ts",
    "alarm_transitions": "ts",
    "alarms": "ts",
    "logs": "ts",
    "dead_letters": "received_at",
}
"""The column each table's retention looks at."""

# Compression layout for the full edition: segment by series, newest first.
_SEGMENT_BY: dict[str, tuple[str, str]] = {
    "readings": ("tenant, device, metric", "ts DESC"),
    "anomaly_scores": ("tenant, device, metric", "ts DESC"),
    "rollups": ("tenant, device, metric, tier", "window_start DESC"),
    "events": ("tenant, device, metric", "ts DESC"),
    "logs": ("tenant, device", "ts DESC"),
    "dead_letters": ("tenant", "received_at DESC"),
}


@dataclass(frozen=True, slots=True)
class RetentionAction:
    """What retention did to one table: ``removed`` chunks (drop_chunks) or rows (delete)."""

    table: str
    method: Literal["drop_chunks", "delete", "policy"]
    removed: int


def apply_retention(
    conn: psycopg.Connection,
    days: Mapping[str, int | None],
    edition: Edition | None = None,
    now: datetime | None = None,
) -> list[RetentionAction]:
    """Remove what is older than ``days[table]`` (``None`` keeps all); commits.

    ``edition`` defaults to :func:`detect_edition`. Tables that are not in
    :data:`TIME_COLUMNS` are refused. Returns one action per table handled.
    """
    unknown = set(days) - set(TIME_COLUMNS)
    if unknown:
        raise ValueError(f"no retention for unknown tables {sorted(unknown)}")
    edition = edition or detect_edition(conn)
    hyper = hypertables(conn)
    now = now or datetime.now(UTC)
    actions: list[RetentionAction] = []
    for table, kept_days in days.items():
        if kept_days is None:
            continue
        cutoff = now - timedelta(days=kept_days)
        column = TIME_COLUMNS[table]
        if table in hyper and edition == "timescale":
            actions.append(RetentionAction(table, "policy", 0))
            continue
        if table in hyper:
            row = conn.execute(
                "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s::timestamptz)",
                (table, cutoff),
            ).fetchone()
            action = RetentionAction(table, "drop_chunks", int(row[0]) if row else 0)
        else:
            only_cleared = " AND state = 'cleared'" if table == "alarms" else ""
            cur = conn.execute(
                f"DELETE FROM {table} WHERE {column} < %s{only_cleared}",
                (cutoff,),
            )
            action = RetentionAction(table, "delete", max(cur.rowcount, 0))
        conn.commit()
        actions.append(action)
        if action.removed:
            REMOVED.inc(action.removed, table=table, method=action.method)
            log.info(
                "retention removed old data",
                extra={
                    "step": "retention",
                    "table": table,
                    "method": action.method,
                    "removed": action.removed,
                    "cutoff": cutoff.isoformat(),
                },
            )
    conn.commit()
    return actions


def ensure_policies(
    conn: psycopg.Connection, days: Mapping[str, int | None], compress_after_days: int | None
) -> list[str]:
    """Install native retention (and, if asked, compression) policies; full edition only.

    Idempotent: an existing retention policy is replaced, so changed days
    apply. Returns the problems met (each also logged), empty when all went
    well; a failed step does not stop the others. Compression cannot be
    combined with row-level security on a hypertable (TimescaleDB refuses
    it), which is why ``compress_after_days`` defaults to ``None``.
    """
    problems: list[str] = []
    for table in sorted(hypertables(conn)):
        steps: list[tuple[str, tuple[object, ...]]] = [
            ("SELECT remove_retention_policy(%s::regclass, if_exists => true)", (table,))
        ]
        kept = days.get(table)
        if kept is not None:
            steps.append(
                (
                    "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)",
                    (table, f"{kept} days"),
                )
            )
        if compress_after_days is not None and table in _SEGMENT_BY:
            segment_by, order_by = _SEGMENT_BY[table]
            steps.append(
                (
                    f"ALTER TABLE {table} SET (timescaledb.compress, "
                    f"timescaledb.compress_segmentby = '{segment_by}', "
                    f"timescaledb.compress_orderby = '{order_by}')",
                    (),
                )
            )
            steps.append(
                (
                    "SELECT add_compression_policy(%s::regclass, compress_after => %s::interval, "
                    "if_not_exists => true)",
                    (table, f"{compress_after_days} days"),
                )
            )
        for sql, params in steps:
            try:
                with conn.transaction():
                    conn.execute(sql, params or None)
            except psycopg.Error as exc:
                problem = f"{table}: {exc}".strip()
                problems.append(problem)
                log.warning(
                    "TimescaleDB policy not installed",
                    extra={"step": "policies", "table": table, "error": str(exc).strip()},
                )
    conn.commit()
    return problems


def _parse_days(pairs: list[str], base: RetentionDays) -> dict[str, int | None]:
    days = base.by_table()
    for pair in pairs:
        table, _, value = pair.partition("=")
        if table not in TIME_COLUMNS or not value:
            raise SystemExit(f"--days expects TABLE=N with TABLE in {sorted(TIME_COLUMNS)}")
        days[table] = None if value.lower() in ("none", "forever") else int(value)
    return days


def _configured_sink() -> TimescaleSinkConfig:
    """The first timescale sink of the pipeline config file ($STREAMFORGE_CONFIG), or defaults.

    Only the file's ``sinks`` list is read (with the sink's own validation):
    the job needs nothing else of the pipeline, and a connector does not load
    the flow's config (``STREAMFORGE_PIPELINE__...`` overrides do not apply here).
    """
    path = os.environ.get("STREAMFORGE_CONFIG")
    if not path:
        return TimescaleSinkConfig()
    loaded = yaml.safe_load(Path(path).read_text()) or {}
    for sink in loaded.get("sinks", []) if isinstance(loaded, dict) else []:
        if isinstance(sink, dict) and sink.get("type") == "timescale":
            return TimescaleSinkConfig.model_validate(sink)
    return TimescaleSinkConfig()


def main(argv: list[str] | None = None) -> int:
    """``python -m connectors.timescale.retention``: run the retention job once."""
    parser = argparse.ArgumentParser(
        prog="python -m connectors.timescale.retention",
        description="Remove data older than each table's retention (days from the pipeline "
        "config's timescale sink, else the defaults).",
    )
    parser.add_argument("--database-url", help="default: the sink's, else Settings")
    parser.add_argument(
        "--days", action="append", default=[], metavar="TABLE=N", help="override (repeatable)"
    )
    args = parser.parse_args(argv)
    sink = _configured_sink()
    days = _parse_days(args.days, sink.retention_days)
    if args.database_url:
        url = args.database_url
    elif sink.database_url:
        url = sink.database_url
    else:
        from schemas.settings import Settings

        url = Settings().database_url
    try:
        with psycopg.connect(url) as conn:
            edition = detect_edition(conn)
            actions = apply_retention(conn, days, edition)
    except psycopg.Error as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return 1
    print(f"edition: {edition}")
    for a in actions:
        print(f"{a.table:<18} {a.method:<11} removed {a.removed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
