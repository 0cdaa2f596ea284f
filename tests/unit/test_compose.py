"""docker-compose.yml stays consistent with the local services and the settings model.

Docker cannot run here, so its structure is checked instead: the services,
the images, host ports equal to the defaults of ``deploy/services.sh``, and
that every ``STREAMFORGE_*`` variable given to the flow and the API is a
field of :class:`schemas.settings.Settings`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _script_default(name: str) -> str:
    text = (REPO / "deploy" / "lib" / "common.sh").read_text()
    match = re.search(rf"{name}=\"?\$\{{{name}:-([^}}]+)\}}", text)
    assert match, f"{name} has no default in deploy/lib/common.sh"
    return match.group(1)


def test_compose_has_the_stack_and_our_services() -> None:
    services = _compose()["services"]
    assert {"kafka", "timescaledb", "mosquitto", "flow", "api"} <= set(services)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    flow = " ".join(services["flow"]["command"])
    # the flow runs with a recovery store, created first when missing, on a volume
    store = re.search(r"python -m flows\.recovery (\S+) \d+ &&", flow)
    assert store, flow
    assert f"exec python -m bytewax.run flows.ingest -r {store.group(1)} " in flow
    assert any(v.endswith(":/var/lib/streamforge") for v in services["flow"]["volumes"])


def test_compose_host_ports_match_the_local_scripts() -> None:
    services = _compose()["services"]
    expected = {
        "kafka": _script_default("STREAMFORGE_KAFKA_PORT"),
        "timescaledb": _script_default("STREAMFORGE_DB_PORT"),
        "mosquitto": _script_default("STREAMFORGE_MQTT_PORT"),
    }
    for service, port in expected.items():
        host_ports = [str(p).split(":")[-2] for p in services[service]["ports"]]
        assert port in host_ports, f"{service} host port {host_ports} != {port}"


def test_kafka_version_matches_the_local_broker() -> None:
    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    version = _compose()["services"]["kafka"]["image"].split(":")[1]
    assert f"<version>{version}</version>" in pom or f">{version}<" in pom


def test_environment_names_are_settings_fields() -> None:
    fields = {f"STREAMFORGE_{name.upper()}" for name in Settings.model_fields}
    services = _compose()["services"]
    for name in ("flow", "api"):
        env = services[name]["environment"]
        names = set(env) if isinstance(env, dict) else {e.split("=")[0] for e in env}
        assert names, f"{name} has no environment"
        unknown = {n for n in names if n.startswith("STREAMFORGE_")} - fields
        assert not unknown, f"{name} sets variables the settings model lacks: {unknown}"


def test_database_credentials_match_the_settings_default() -> None:
    env = _compose()["services"]["timescaledb"]["environment"]
    default = Settings.model_fields["database_url"].default
    assert f"{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@" in default
    assert default.endswith(f"/{env['POSTGRES_DB']}")
