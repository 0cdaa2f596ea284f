"""docker-compose.yml stays consistent with the local services, the settings and the image.

Docker cannot run here, so its structure is checked instead: the services,
the images, host ports equal to the defaults of ``deploy/services.sh``, that
every ``STREAMFORGE_*`` variable given to our services is a setting or a
pipeline config path, and the split topology: the gateway with its spool on
a volume, and the ingest flow as a cluster of processes sharing a recovery
store that a one-shot service creates first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from api.settings import ApiSettings
from connectors.runtime.metrics_server import port_for_process
from flows.config import load_pipeline_config
from schemas.settings import Settings
from tests.unit.deploy_env import unknown_variables

REPO = Path(__file__).resolve().parents[2]
IMAGE = "streamforge:local"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _script_default(name: str) -> str:
    text = (REPO / "deploy" / "lib" / "common.sh").read_text()
    match = re.search(rf"{name}=\"?\$\{{{name}:-([^}}]+)\}}", text)
    assert match, f"{name} has no default in deploy/lib/common.sh"
    return match.group(1)


def _option(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, f"{flag} once in {command}"
    return command[command.index(flag) + 1]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount point -> source of a service's volumes (short syntax)."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def flow_services(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The processes of the ingest flow: services running ``bytewax.run flows.ingest``."""
    return {
        name: s
        for name, s in services.items()
        if s.get("command", [])[:4] == ["python", "-m", "bytewax.run", "flows.ingest"]
    }


def test_compose_has_the_stack_and_our_services() -> None:
    services = _compose()["services"]
    expected = {"kafka", "timescaledb", "mosquitto", "gateway", "flow-recovery", "api"}
    assert expected <= set(services)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert set(flow_services(services)) == {"flow-0", "flow-1"}
    ours = ["gateway", "flow-recovery", "flow-0", "flow-1", "api"]
    for name in ours:  # one image, built from deploy/Dockerfile
        assert services[name]["image"] == IMAGE, name
        assert services[name]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}


def test_gateway_runs_one_process_with_its_spool_on_a_volume() -> None:
    compose = _compose()
    gateway = compose["services"]["gateway"]
    assert gateway["command"] == ["python", "-m", "bytewax.run", "flows.gateway", "-s", "1"]
    assert "-i" not in gateway["command"] and "-r" not in gateway["command"]
    spool = gateway["environment"]["STREAMFORGE_PIPELINE__GATEWAY__SPOOL__PATH"]
    volume = _mounts(gateway).get(spool)
    assert volume in compose["volumes"], f"the spool {spool} is not on a named volume"
    assert gateway["environment"]["STREAMFORGE_PIPELINE__GATEWAY__ID"]
    # the config it runs, with its overrides, is valid and splits the topology
    config_path = gateway["environment"]["STREAMFORGE_CONFIG"]
    assert config_path.startswith("/app/deploy/")  # the Dockerfile copies deploy/*.yaml there
    config = load_pipeline_config(REPO / "deploy" / Path(config_path).name, gateway["environment"])
    assert config.topology == "split"
    assert config.gateway.spool.path == spool
    assert config.gateway.id == gateway["environment"]["STREAMFORGE_PIPELINE__GATEWAY__ID"]


def test_flow_processes_form_one_cluster_with_a_shared_recovery_store() -> None:
    compose = _compose()
    services = compose["services"]
    flows = flow_services(services)
    init = services["flow-recovery"]
    match = re.fullmatch(r"python -m flows\.recovery (\S+) (\d+)", " ".join(init["command"]))
    assert match, init["command"]
    store, partitions = match.group(1), int(match.group(2))
    assert init["restart"] == "no"
    volume = _mounts(init)[store]
    assert volume in compose["volumes"]
    # one partition per process (Bytewax: the processes together see every partition)
    assert partitions == len(flows)
    ids = sorted(int(_option(s["command"], "-i")) for s in flows.values())
    assert ids == list(range(len(flows)))
    by_id = {int(_option(s["command"], "-i")): name for name, s in flows.items()}
    for name, flow in flows.items():
        command = flow["command"]
        assert _option(command, "-r") == store
        assert _mounts(flow)[store] == volume, f"{name} does not see the store"
        assert flow["depends_on"]["flow-recovery"] == {
            "condition": "service_completed_successfully"
        }
        addresses = _option(command, "-a").split(";")
        assert [a.split(":")[0] for a in addresses] == [by_id[i] for i in range(len(flows))]
        assert len({a.split(":")[1] for a in addresses}) == 1
    commands = []
    for flow in flows.values():
        command = list(flow["command"])
        command[command.index("-i") + 1] = "ID"
        commands.append(command)
    assert all(c == commands[0] for c in commands), "the processes differ beyond their -i"


def test_health_checks_ask_each_process_on_its_metrics_port() -> None:
    services = _compose()["services"]
    for name in ["gateway", *flow_services(services)]:
        service = services[name]
        command = service["command"]
        pid = int(_option(command, "-i")) if "-i" in command else 0
        port = port_for_process(service["environment"], pid)
        check = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/health" in check, f"{name}: {check}"
        assert service["environment"]["STREAMFORGE_METRICS_HOST"] == "0.0.0.0"


def test_volume_mount_points_exist_in_the_image_owned_by_its_user() -> None:
    # A new named volume takes the owner of the directory it is mounted on.
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)", dockerfile, re.M)
    assert user
    run = dockerfile[dockerfile.index("useradd") :].split("\n\n")[0]
    assert f"chown -R {user.group(1)}:{user.group(1)} /var/lib/streamforge" in run
    compose = _compose()
    for name in ("gateway", "flow-recovery", "flow-0", "flow-1"):
        for target, source in _mounts(compose["services"][name]).items():
            if source in compose["volumes"]:
                assert re.search(rf"mkdir -p [^&]*{re.escape(target)}\b", run), target


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


def test_environment_names_are_settings_fields_or_pipeline_paths() -> None:
    services = _compose()["services"]
    for name in ("gateway", "flow-0", "flow-1", "api"):
        env = services[name]["environment"]
        names = set(env) if isinstance(env, dict) else {e.split("=")[0] for e in env}
        assert names, f"{name} has no environment"
        unknown = unknown_variables(names, ApiSettings if name == "api" else Settings)
        assert not unknown, f"{name}: {unknown}"


def test_database_credentials_match_the_settings_default() -> None:
    env = _compose()["services"]["timescaledb"]["environment"]
    default = Settings.model_fields["database_url"].default
    assert f"{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@" in default
    assert default.endswith(f"/{env['POSTGRES_DB']}")
