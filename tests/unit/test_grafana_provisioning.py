"""Grafana and Prometheus for Docker users: the files parse and name things that exist.

Grafana cannot run here, so its provisioning is checked instead: the
datasource and dashboard files parse; every panel uses a provisioned
datasource; every metric a PromQL query names is one StreamForge declares
(or prometheus_client's process collector, or Prometheus's ``up``); every
table and column a SQL query names is in ``schemas/sql``; and the compose
services agree with the local scripts (versions, ports, job, credentials).
``tests/integration/test_grafana_queries.py`` runs the SQL on TimescaleDB.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.runtime.metrics_server import port_for_process
from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DECLARED = re.compile(r"\b(counter|gauge|histogram)\(\s*\"(\w+)\"", re.S)
PROCESS_METRICS = {"up", "process_cpu_seconds_total", "process_resident_memory_bytes"}
BYTEWAX_HISTOGRAMS = {
    # Bytewax 0.21's own step timings (its Dataflow API server's /metrics,
    # which each flow process's /metrics answers: connectors/runtime/metrics_server.py).
    "bytewax_stateful_batch_on_batch_duration_seconds",
    "bytewax_flat_map_batch_duration_seconds",
    "bytewax_out_part_write_batch_duration_seconds",
    "bytewax_snapshot_duration_seconds",
}
SQL_WORDS = {
    "select", "from", "where", "and", "or", "not", "is", "null", "order", "by", "group",
    "limit", "as", "in", "desc", "asc", "distinct", "union", "all", "interval", "day",
}  # fmt: skip


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(REPO / "docker-compose.yml")
    return data


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.stem, panel)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
    ]


def _declared_metrics() -> dict[str, str]:
    """Metric name -> kind, from every counter(...)/gauge(...)/histogram(...) in the code."""
    found: dict[str, str] = {}
    for package in ("connectors", "flows", "api"):
        for path in (REPO / package).rglob("*.py"):
            for kind, name in DECLARED.findall(path.read_text()):
                found[name] = kind
    return found


def _sql_tables() -> dict[str, set[str]]:
    """Table -> columns, from the CREATE TABLE and ADD COLUMN statements of schemas/sql."""
    tables: dict[str, set[str]] = {}
    for path in sorted((REPO / "schemas" / "sql").glob("*.sql")):
        text = path.read_text()
        for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", text, re.S):
            cols = re.findall(r"^\s+(\w+)\s+\w", body, re.M)
            tables[name] = {c for c in cols if c.upper() not in {"PRIMARY", "UNIQUE"}}
        for name, col in re.findall(r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+)", text):
            tables.setdefault(name, set()).add(col)
    return tables


def _sql_queries() -> list[tuple[str, str]]:
    queries = [
        (f"{dash}: {panel['title']}", target["rawSql"])
        for dash, panel in _panels()
        for target in panel["targets"]
        if "rawSql" in target
    ]
    for path in DASHBOARDS:
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["datasource"]["uid"] == "streamforge-timescaledb":
                queries.append((f"{path.stem}: ${var['name']}", var["query"]))
    return queries


def test_provisioning_files_parse_and_point_at_the_dashboards() -> None:
    sources = _yaml(GRAFANA / "provisioning" / "datasources" / "streamforge.yml")
    assert {d["uid"] for d in sources["datasources"]} == {
        "streamforge-prometheus",
        "streamforge-timescaledb",
    }
    providers = _yaml(GRAFANA / "provisioning" / "dashboards" / "streamforge.yml")
    path = providers["providers"][0]["options"]["path"]
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts
    assert {p.stem for p in DASHBOARDS} == {"plant", "pipeline"}


def test_every_panel_uses_a_provisioned_datasource() -> None:
    sources = _yaml(GRAFANA / "provisioning" / "datasources" / "streamforge.yml")
    types = {d["uid"]: d["type"] for d in sources["datasources"]}
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path
    for dash, panel in _panels():
        assert panel["targets"], f"{dash}: {panel['title']} has no query"
        for ds in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert types.get(ds["uid"]) == ds["type"], f"{dash}: {panel['title']}: {ds}"


@pytest.mark.parametrize("dashboard", ["pipeline"])
def test_promql_names_only_declared_metrics(dashboard: str) -> None:
    declared = _declared_metrics()
    exprs = [t["expr"] for dash, panel in _panels() if dash == dashboard for t in panel["targets"]]
    assert exprs
    for expr in exprs:
        bare = re.sub(r"\b(by|without)\s*\([^)]*\)|\{[^}]*\}", " ", expr)  # labels
        names = set(re.findall(r"\b([a-z_]+_[a-z_]+|up)\b(?=[\[)\s]|$)", bare))
        names -= {"histogram_quantile", "sum", "rate"}
        assert names, expr
        for name in names:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if declared.get(base) == "histogram" or base in BYTEWAX_HISTOGRAMS:
                continue
            assert name in declared or name in PROCESS_METRICS, f"{name} in {expr!r}"


def test_sql_names_only_existing_tables_and_columns() -> None:
    tables = _sql_tables()
    queries = _sql_queries()
    assert len(queries) >= 6
    for where, query in queries:
        text = re.sub(r"'[^']*'", "''", query)  # string literals
        text = re.sub(r"\$__\w+|\$\w+", " ", text)  # Grafana macros and variables
        text = re.sub(r"\bAS\s+\w+", " ", text, flags=re.I)  # aliases
        used = re.findall(r"\bFROM\s+(\w+)", text, re.I)
        assert used and all(t in tables for t in used), f"{where}: tables {used}"
        columns = set().union(*(tables[t] for t in used))
        for word in re.findall(r"\b([a-z_]\w*)\b(?!\s*\()", text, re.I):
            if word.lower() in SQL_WORDS or word in used:
                continue
            assert word in columns, f"{where}: {word} is not a column of {used}"


def test_compose_prometheus_and_grafana_agree_with_the_local_setup() -> None:
    services = _compose()["services"]
    script = (REPO / "deploy" / "prometheus" / "prometheus.sh").read_text()
    version = re.search(r"^PM_DEBIAN_VERSION=(\S+)", script, re.M)
    port = re.search(r"STREAMFORGE_PROMETHEUS_PORT:-(\d+)", script)
    assert version and port
    assert services["prometheus"]["image"] == f"prom/prometheus:v{version.group(1)}"
    assert f"127.0.0.1:{port.group(1)}:9090" in services["prometheus"]["ports"]
    local = (REPO / "deploy" / "prometheus" / "prometheus.yml.in").read_text()
    compose = _yaml(REPO / "deploy" / "prometheus" / "prometheus.compose.yml")
    job = compose["scrape_configs"][0]
    assert f"job_name: {job['job_name']}" in local
    targets = {
        t: group["labels"]["component"] for group in job["static_configs"] for t in group["targets"]
    }
    api_port = services["api"]["command"][services["api"]["command"].index("--port") + 1]
    # The gateway and every flow process, each on its metrics port: base + process id.
    expected = {f"api:{api_port}": "api"}
    for name in ("gateway", "flow-0", "flow-1"):
        env, command = services[name]["environment"], services[name]["command"]
        assert env["STREAMFORGE_METRICS_PORT"] == Settings.model_fields["metrics_port"].default
        assert env["STREAMFORGE_METRICS_HOST"] == "0.0.0.0"
        pid = int(command[command.index("-i") + 1]) if "-i" in command else 0
        port = port_for_process(env, pid)
        expected[f"{name}:{port}"] = "gateway" if name == "gateway" else "flow"
    assert targets == expected
    # Grafana's TimescaleDB datasource logs in as the database's own user.
    grafana, db = services["grafana"]["environment"], services["timescaledb"]["environment"]
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert grafana[name] == db[name]
    for volume in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        source = volume.split(":")[0]
        assert not source.startswith("./") or (REPO / source).exists(), volume
