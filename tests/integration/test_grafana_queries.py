"""Every SQL query of the Grafana dashboards runs on a migrated TimescaleDB and returns rows.

Grafana's macros are expanded as its PostgreSQL datasource does with
``timescaledb: true`` (``$__timeFilter`` -> a BETWEEN, ``$__timeGroupAlias``
-> ``time_bucket(...) AS time``), the variables become one device and metric
of the API tests' fixture data, and the time range is that data's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest

from tests.integration.api_harness import World

pytest_plugins = ["tests.integration.api_harness"]

REPO = Path(__file__).resolve().parents[2]
FROM, TO = "'2026-01-01T00:00:00Z'::timestamptz", "'2026-01-01T02:00:00Z'::timestamptz"


def expand(query: str) -> str:
    """Grafana's macros and variables, as its PostgreSQL datasource expands them."""
    query = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN {FROM} AND {TO}", query)
    query = re.sub(
        r"\$__timeGroupAlias\((\w+),\s*'(\w+)'\)", r"time_bucket('\2', \1) AS time", query
    )
    return query.replace("$device", "'press-1'").replace("$metric", "'temperature'")


def _queries() -> list[tuple[str, str]]:
    found = []
    for path in sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    found.append((f"{path.stem}: {panel['title']}", target["rawSql"]))
    return found


@pytest.mark.parametrize(("title", "query"), _queries(), ids=[t for t, _ in _queries()])
def test_dashboard_query_runs(api_world: World, title: str, query: str) -> None:
    with psycopg.connect(api_world.url) as conn:
        rows = conn.execute(expand(query)).fetchall()  # type: ignore[call-overload]
    if "score" not in query:  # the fixture's readings have no anomaly scores
        assert rows, f"{title}: no rows"
