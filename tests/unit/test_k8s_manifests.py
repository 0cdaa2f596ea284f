"""deploy/k8s/ (a kustomize base) is consistent with itself, the settings and docker-compose.yml.

No cluster here: the manifests are parsed and cross-checked instead. Every
object is of a known kind; every name one object uses for another (Service
selectors and pod labels, volume mounts and volumes, ConfigMaps, Secrets,
claims, the StatefulSet's headless Service) resolves; every
``STREAMFORGE_*`` variable is a setting or a pipeline config path; the ports
agree between containers, probes, Services, the settings and compose; the
flow's address list names every replica; the images and commands are
compose's; the embedded pipeline config is ``deploy/pipeline.demo.yaml``.
The StatefulSet's two shell scripts are run, with a stand-in for the paths
and the process. With ``kubectl`` on the PATH, ``kubectl kustomize`` renders
the base too.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.routers.ops import router as ops_router
from api.settings import ApiSettings
from connectors.runtime.metrics_server import port_for_process
from flows.config import load_pipeline_config
from flows.recovery import store_partitions
from schemas.settings import Settings
from tests.unit.deploy_env import pipeline_path_error, unknown_variables

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KINDS = {
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
}
RECOVERY_DIR = "/var/lib/streamforge/recovery"


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def _objects() -> list[dict[str, Any]]:
    objects = []
    for name in _kustomization()["resources"]:
        objects += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    return objects


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _objects() if o["kind"] == kind}


def _workloads() -> dict[str, dict[str, Any]]:
    return {**_named("Deployment"), **_named("StatefulSet")}


def _workload(component: str) -> dict[str, Any]:
    """The one workload whose pods are the given app.kubernetes.io/component."""
    found = [
        w
        for w in _workloads().values()
        if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == component
    ]
    assert len(found) == 1, component
    return found[0]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = workload["spec"]["template"]["spec"]
    return pod


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod(workload)
    return [*pod.get("initContainers", []), *pod["containers"]]


def _main(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _pod(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def _port(container: dict[str, Any], name_or_number: str | int) -> int:
    """A container port by name or number (it must be declared either way)."""
    for port in container.get("ports", []):
        if name_or_number in (port.get("name"), port["containerPort"]):
            return int(port["containerPort"])
    raise AssertionError(f"{container['name']} declares no port {name_or_number!r}")


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets: its envFrom ConfigMaps and Secrets, then its env."""
    configmaps, secrets = _named("ConfigMap"), _named("Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
        else:
            env.update(secrets[source["secretRef"]["name"]]["stringData"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def _settings() -> dict[str, str]:
    data: dict[str, str] = _named("ConfigMap")["streamforge-settings"]["data"]
    return data


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _script(container: dict[str, Any]) -> str:
    assert container["command"] == ["sh", "-c"], container["name"]
    script: str = container["args"][0]
    return script


# -- the files ----------------------------------------------------------------


def test_every_file_parses_and_every_manifest_is_listed() -> None:
    files = {p.name for p in K8S.glob("*.yaml")}
    generated = {
        f.split("=")[-1] for g in _kustomization()["configMapGenerator"] for f in g["files"]
    }
    for name in files:
        assert list(yaml.safe_load_all((K8S / name).read_text())), f"{name} is empty"
    assert set(_kustomization()["resources"]) == files - {"kustomization.yaml"} - generated
    assert (K8S / "README.md").is_file()


def test_every_object_is_of_a_known_kind_and_uniquely_named() -> None:
    seen = set()
    for obj in _objects():
        assert (obj["apiVersion"], obj["kind"]) in KINDS, obj.get("kind")
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in seen, f"{key} twice"
        seen.add(key)
        # no namespace: `kubectl apply -k` puts everything in one, which the
        # short DNS names (kafka, streamforge-flow-0.streamforge-flow) rely on
        assert "namespace" not in obj["metadata"]
    assert {k for k, _ in seen} >= {"StatefulSet", "Deployment", "Service", "ConfigMap"}


def test_embedded_pipeline_config_is_deploy_pipeline_demo_byte_for_byte() -> None:
    (generator,) = _kustomization()["configMapGenerator"]
    assert generator["name"] == "streamforge-pipeline"
    (entry,) = generator["files"]
    key, file = entry.split("=")
    embedded = (K8S / file).read_bytes()
    assert embedded == (REPO / "deploy" / "pipeline.demo.yaml").read_bytes(), (
        "deploy/k8s/pipeline.demo.yaml differs: cp deploy/pipeline.demo.yaml deploy/k8s/"
    )
    # every workload mounts it where STREAMFORGE_CONFIG says
    for name, workload in _workloads().items():
        volumes = {v["name"]: v for v in _pod(workload).get("volumes", [])}
        container = _main(workload)
        mount = next(
            m
            for m in container["volumeMounts"]
            if volumes.get(m["name"], {}).get("configMap", {}).get("name") == generator["name"]
        )
        assert _env(container)["STREAMFORGE_CONFIG"] == f"{mount['mountPath']}/{key}", name


# -- names that must resolve --------------------------------------------------


def test_services_select_pods_on_declared_ports() -> None:
    workloads = _workloads()
    for name, workload in workloads.items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    for name, service in _named("Service").items():
        selector = service["spec"]["selector"]
        selected = [
            w
            for w in workloads.values()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} workloads"
        container = _main(selected[0])
        for port in service["spec"]["ports"]:
            assert _port(container, port["targetPort"]) == port["port"], f"{name}: {port}"


def test_volume_mounts_and_claims_resolve() -> None:
    pvcs, configmaps = _named("PersistentVolumeClaim"), _named("ConfigMap")
    generated = {g["name"] for g in _kustomization()["configMapGenerator"]}
    for name, workload in _workloads().items():
        volumes = {v["name"]: v for v in _pod(workload).get("volumes", [])}
        claim_templates = workload["spec"].get("volumeClaimTemplates", [])
        templates = {t["metadata"]["name"] for t in claim_templates}
        assert not volumes.keys() & templates, name
        mounted = {m["name"] for c in _containers(workload) for m in c.get("volumeMounts", [])}
        assert mounted == volumes.keys() | templates, f"{name}: unmounted or unknown volumes"
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in pvcs
            elif "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps.keys() | generated
            else:
                raise AssertionError(f"{name}: unexpected volume {volume}")
    # every claim is used
    claimed = {
        v["persistentVolumeClaim"]["claimName"]
        for w in _workloads().values()
        for v in _pod(w).get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    assert claimed == pvcs.keys()


def test_env_sources_resolve() -> None:
    configmaps, secrets = _named("ConfigMap"), _named("Secret")
    for name, workload in _workloads().items():
        for container in _pod(workload)["containers"]:
            refs = container.get("envFrom", [])
            assert refs, f"{name} gets no settings"
            for ref in refs:
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in configmaps
                else:
                    assert ref["secretRef"]["name"] in secrets
            for var in container.get("env", []):
                assert set(var) == {"name", "value"}, var  # no other reference to resolve


def test_streamforge_variables_are_settings_or_pipeline_paths() -> None:
    for name, workload in _workloads().items():
        model = ApiSettings if name == "streamforge-api" else Settings
        for container in _pod(workload)["containers"]:
            unknown = unknown_variables(_env(container), model)
            assert not unknown, f"{name}: {unknown}"


def test_pipeline_path_check_tells_fields_from_misspellings() -> None:
    # The check above relies on this walk through the pipeline config's models.
    assert pipeline_path_error("STREAMFORGE_PIPELINE__TENANT") is None
    assert pipeline_path_error("STREAMFORGE_PIPELINE__DECODE__MAX_BATCH_ITEMS") is None
    assert pipeline_path_error("STREAMFORGE_PIPELINE__GATEWAY__SPOOL__PATH") is None
    assert pipeline_path_error("STREAMFORGE_PIPELINE__GATEWAY__SPOOL__PATHS")
    assert pipeline_path_error("STREAMFORGE_PIPELINE__TENANT__X")  # a string has no fields
    assert pipeline_path_error("STREAMFORGE_PIPELINE__SOURCES__0")  # nor has a list
    assert unknown_variables({"STREAMFORGE_METRICS_PORTS"})
    assert not unknown_variables({"STREAMFORGE_METRICS_PORT", "PATH"})


def test_each_workload_loads_the_pipeline_config_with_its_overrides() -> None:
    demo = REPO / "deploy" / "pipeline.demo.yaml"
    for name, workload in _workloads().items():
        config = load_pipeline_config(demo, _env(_main(workload)))
        assert config.topology == "split", name
    gateway_env = _env(_main(_workload("gateway")))
    config = load_pipeline_config(demo, gateway_env)
    assert config.gateway.spool.path == gateway_env["STREAMFORGE_PIPELINE__GATEWAY__SPOOL__PATH"]
    assert config.gateway.id == gateway_env["STREAMFORGE_PIPELINE__GATEWAY__ID"]


# -- ports and probes ---------------------------------------------------------


def test_flow_and_gateway_probe_health_on_the_metrics_port_of_the_settings() -> None:
    settings = _settings()
    base = settings["STREAMFORGE_METRICS_PORT"]
    assert base == Settings.model_fields["metrics_port"].default
    assert settings["STREAMFORGE_METRICS_HOST"] == "0.0.0.0"  # probes come from outside the pod
    for component in ("gateway", "flow"):
        workload = _workload(component)
        container = _main(workload)
        assert _port(container, "metrics") == int(base), component
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == base
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/health", (component, probe)
            assert _port(container, get["port"]) == int(base), (component, probe)


def test_api_probes_and_service_use_the_compose_api_port() -> None:
    compose_api = _compose()["services"]["api"]
    api = _workload("api")
    container = _main(api)
    assert container["command"] == compose_api["command"]
    port = int(container["command"][container["command"].index("--port") + 1])
    assert _port(container, "http") == port
    assert f"{port}:{port}" in compose_api["ports"]
    routes = {getattr(r, "path", None) for r in ops_router.routes}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes, probe
        assert _port(container, get["port"]) == port, probe
    (service,) = [
        s
        for s in _named("Service").values()
        if s["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    ]
    assert [p["port"] for p in service["spec"]["ports"]] == [port]


def test_settings_point_at_the_same_services_as_compose() -> None:
    compose_env = _compose()["services"]["flow-0"]["environment"]
    env = {**_settings(), **_named("Secret")["streamforge-database"]["stringData"]}
    for name in (
        "STREAMFORGE_KAFKA_BOOTSTRAP_SERVERS",
        "STREAMFORGE_DATABASE_URL",
        "STREAMFORGE_MQTT_URL",
        "STREAMFORGE_METRICS_HOST",
        "STREAMFORGE_METRICS_PORT",
    ):
        assert env[name] == compose_env[name], name


# -- the ingest flow ----------------------------------------------------------


def test_statefulset_has_its_headless_service_and_addresses_for_every_replica() -> None:
    flow = _workload("flow")
    assert flow["kind"] == "StatefulSet"
    name, replicas = flow["metadata"]["name"], flow["spec"]["replicas"]
    assert replicas == 2
    service = _named("Service")[flow["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == flow["spec"]["selector"]["matchLabels"]
    container = _main(flow)
    cluster = _port(container, "cluster")
    addresses = _env(container)["FLOW_ADDRESSES"].split(";")
    assert addresses == [
        f"{name}-{i}.{service['metadata']['name']}:{cluster}" for i in range(replicas)
    ]
    # the same worker port as compose
    compose_flow = _compose()["services"]["flow-0"]["command"]
    compose_addresses = compose_flow[compose_flow.index("-a") + 1].split(";")
    assert {a.split(":")[1] for a in compose_addresses} == {str(cluster)}
    script = _script(container)
    assert 'id="${HOSTNAME##*-}"' in script
    assert '-i "$id" -a "$FLOW_ADDRESSES"' in script


def test_flow_command_is_composes_with_recovery_on_each_pods_volume() -> None:
    flow = _workload("flow")
    container = _main(flow)
    script = _script(container)
    compose_flow = _compose()["services"]["flow-0"]["command"]
    common = " ".join(compose_flow[: compose_flow.index("-i")])  # up to the process id
    assert f"exec {common} -i " in script
    store = compose_flow[compose_flow.index("-r") + 1]
    assert store == RECOVERY_DIR
    (template,) = flow["spec"]["volumeClaimTemplates"]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    for c in _containers(flow):
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts[store] == template["metadata"]["name"], c["name"]
    (init,) = _pod(flow)["initContainers"]
    assert "python -m flows.recovery" in _script(init)
    # the partitions: one per replica, each pod holding its own
    partitions = {e["name"]: e["value"] for e in init["env"]}["RECOVERY_PARTITIONS"]
    assert int(partitions) == flow["spec"]["replicas"]
    assert flow["spec"]["podManagementPolicy"] == "Parallel"
    # fsGroup: a new claim is writable by the image's user
    assert _pod(flow)["securityContext"]["fsGroup"] == _pod(flow)["securityContext"]["runAsUser"]


def _run(script: str, env: dict[str, str], tmp: Path) -> str:
    done = subprocess.run(
        ["sh", "-c", script.replace(RECOVERY_DIR, str(tmp / "recovery"))],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_recovery_init_gives_each_pod_its_own_partition(tmp_path: Path) -> None:
    flow = _workload("flow")
    (init,) = _pod(flow)["initContainers"]
    script = _script(init)
    python_dir = str(Path(sys.executable).parent)  # `python` with flows installed
    stores = {}
    for pod in ("0", "1", "2"):
        work = tmp_path / pod
        (work / "recovery").mkdir(parents=True)  # the claim, mounted
        env = {
            "HOSTNAME": f"{flow['metadata']['name']}-{pod}",
            "RECOVERY_PARTITIONS": str(flow["spec"]["replicas"]),
            "PATH": f"{python_dir}:{os.environ['PATH']}",
        }
        first = _run(script, env, work)
        stores[pod] = sorted(p.name for p in (work / "recovery").iterdir())
        again = _run(script, env, work)  # every later start keeps it
        assert "kept" in again or "none" in again, (first, again)
        assert sorted(p.name for p in (work / "recovery").iterdir()) == stores[pod]
    # together, one store of 2 partitions, each once; ordinal 2 (scaled up) holds none
    assert stores == {"0": ["part-0.sqlite3"], "1": ["part-1.sqlite3"], "2": []}
    assert store_partitions(tmp_path / "0" / "recovery") == 1


def test_flow_script_runs_process_ordinal_on_the_probed_metrics_port(tmp_path: Path) -> None:
    flow = _workload("flow")
    container = _main(flow)
    # a stand-in for python that prints what it was given
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$STREAMFORGE_METRICS_PORT $*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**_env(container), "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    for ordinal in range(flow["spec"]["replicas"]):
        env["HOSTNAME"] = f"{flow['metadata']['name']}-{ordinal}"
        base, args = _run(_script(container), env, tmp_path).split(" ", 1)
        argv = args.split()
        assert argv[argv.index("-i") + 1] == str(ordinal)
        assert argv[argv.index("-a") + 1] == env["FLOW_ADDRESSES"]
        # what metrics_server will listen on: the port the probes ask
        served = port_for_process({"STREAMFORGE_METRICS_PORT": base}, ordinal)
        assert served == _port(container, "metrics")


# -- the gateway --------------------------------------------------------------


def test_gateway_is_one_recreated_pod_with_its_spool_on_a_claim() -> None:
    gateway = _workload("gateway")
    assert gateway["kind"] == "Deployment"
    assert gateway["spec"]["replicas"] == 1
    assert gateway["spec"]["strategy"] == {"type": "Recreate"}
    container = _main(gateway)
    compose_gateway = _compose()["services"]["gateway"]
    assert container["command"] == compose_gateway["command"]
    spool = _env(container)["STREAMFORGE_PIPELINE__GATEWAY__SPOOL__PATH"]
    assert spool == compose_gateway["environment"]["STREAMFORGE_PIPELINE__GATEWAY__SPOOL__PATH"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == spool]
    volumes = {v["name"]: v for v in _pod(gateway)["volumes"]}
    claim = _named("PersistentVolumeClaim")[
        volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    ]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert _pod(gateway)["securityContext"]["fsGroup"] == 10001


# -- images -------------------------------------------------------------------


def test_every_container_runs_the_compose_image() -> None:
    image = _compose()["services"]["flow-0"]["image"]
    (override,) = _kustomization()["images"]
    assert f"{override['name']}:{override['newTag']}" == image
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    for name, workload in _workloads().items():
        for container in _containers(workload):
            assert container["image"] == image, (name, container["name"])
        user = _pod(workload)["securityContext"]["runAsUser"]
        assert f"--uid {user} " in dockerfile, name


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_base() -> None:
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    (pipeline,) = [
        d
        for d in rendered
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("streamforge-pipeline-")
    ]
    demo = (REPO / "deploy" / "pipeline.demo.yaml").read_text()
    assert pipeline["data"]["pipeline.yaml"] == demo
    # every workload mounts the generated (hashed) name
    for workload in (d for d in rendered if d["kind"] in ("Deployment", "StatefulSet")):
        names = {v["configMap"]["name"] for v in _pod(workload)["volumes"] if "configMap" in v}
        assert names == {pipeline["metadata"]["name"]}, workload["metadata"]["name"]
