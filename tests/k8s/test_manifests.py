"""The rendered overlays: valid against the Kubernetes schemas, and what issue 7 asks of them.

Every Deployment and StatefulSet must have gRPC probes, requests and limits and a strict
securityContext; the profile shards must agree with the addresses the other services use; the
model volume has exactly one writer; the termination grace covers the servers' own grace.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any

import kubernetes_validate
import pytest

from tests.k8s.conftest import (
    OVERLAYS,
    ROOT,
    SCHEMA_VERSIONS,
    WORKLOAD_KINDS,
    by_kind,
    config_data,
    is_vitrine,
    pod_labels,
    pod_spec,
    render,
)

CONTRACT_PORTS = {"gateway": 50051, "profile": 50052, "segmentation": 50053, "recommendation": 50054,
                  "journeys": 50055}
NAMESPACES = {"dev": "vitrine-dev", "prod": "vitrine"}
DATA_DIR = "/var/lib/vitrine"
MODELS_DIR = f"{DATA_DIR}/recommendation/models"
# The only places a container may write (all else is the read-only root filesystem).
WRITABLE_MOUNTS = {"/tmp", DATA_DIR, MODELS_DIR}
# Secrets production creates itself (docs/deployment.md says how); optional ones may be absent.
EXTERNAL_SECRETS = {"vitrine-auth", "vitrine-tls"}


def _workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Vitrine's Deployments and StatefulSets (the NATS cluster in prod has its own checks)."""
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS and is_vitrine(o)]


def _pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if is_vitrine(o)]


def _service_of(obj: dict[str, Any]) -> str:
    """The Vitrine service a workload runs: `serve <name>` in its args."""
    args = pod_spec(obj)["containers"][0]["args"]
    return args[args.index("serve") + 1]


_UNITS = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float) -> float:
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(value))
    assert match, f"unparsable quantity {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


def _env(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str]:
    """The container's effective literal environment (ConfigMap envFrom, then env values)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(by_kind(objects, "ConfigMap")[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "<from " + str(item.get("valueFrom")) + ">")
    return env


# --- schema -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_every_object_passes_the_kubernetes_schema(name: str, version: str) -> None:
    failures = []
    for obj in render(name):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {str(err).splitlines()[0]}")
    assert not failures, "\n".join(failures)


def test_the_suite_is_complete(overlay: str, objects: list[dict[str, Any]]) -> None:
    # prod runs in scale-out mode: the NATS cluster of its event log as well (test_nats.py).
    nats = {"nats"} if overlay == "prod" else set()
    assert set(by_kind(objects, "Deployment")) == {
        "gateway", "segmentation", "recommendation", "recommendation-trainer", "journeys"}
    assert set(by_kind(objects, "StatefulSet")) == {"profile"} | nats
    assert set(by_kind(objects, "CronJob")) == {"vitrine-train"}
    assert set(by_kind(objects, "PodDisruptionBudget")) == {
        "gateway", "segmentation", "recommendation", "profile"} | nats
    assert set(by_kind(objects, "HorizontalPodAutoscaler")) == {"gateway", "recommendation"}
    assert "default-deny-ingress" in by_kind(objects, "NetworkPolicy")


def test_every_object_lives_in_the_overlay_namespace(overlay: str, objects: list[dict[str, Any]]) -> None:
    namespace = NAMESPACES[overlay]
    assert list(by_kind(objects, "Namespace")) == [namespace]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


# --- what every workload must have ------------------------------------------------------------

def test_workloads_have_grpc_probes_on_their_contract_port(objects: list[dict[str, Any]]) -> None:
    for obj in _workloads(objects):
        port = CONTRACT_PORTS[_service_of(obj)]
        for container in pod_spec(obj)["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["grpc"] == port, obj["metadata"]["name"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"]["port"] == port, (obj["metadata"]["name"], probe)
                # "" is the server's overall health (SERVING once the service is ready).
                assert container[probe]["grpc"].get("service", "") == ""


def test_containers_have_requests_and_limits(objects: list[dict[str, Any]]) -> None:
    for obj in _pods(objects):
        spec = pod_spec(obj)
        for container in spec["containers"] + spec.get("initContainers", []):
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                limit = quantity(resources["limits"][resource])
                assert 0 < request <= limit, (obj["metadata"]["name"], resource)


def test_strict_security_context(objects: list[dict[str, Any]]) -> None:
    for obj in _pods(objects):
        name = obj["metadata"]["name"]
        spec = pod_spec(obj)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0 and pod["runAsGroup"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(forbidden), (name, forbidden)
        assert all("hostPath" not in v for v in spec.get("volumes", [])), name
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert not ctx["capabilities"].get("add"), name
            assert not ctx.get("privileged"), name


def test_writable_volumes_only_where_needed(objects: list[dict[str, Any]]) -> None:
    """Read-only root: /tmp (numba cache, temp files) and the data directory are the writable mounts."""
    for obj in _pods(objects):
        spec = pod_spec(obj)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        for container in spec["containers"] + spec.get("initContainers", []):
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            if container in spec["containers"]:
                assert "emptyDir" in volumes[mounts["/tmp"]["name"]], obj["metadata"]["name"]
                if obj["kind"] != "CronJob":
                    assert DATA_DIR in mounts, obj["metadata"]["name"]
            for path, mount in mounts.items():
                if not mount.get("readOnly"):
                    assert path in WRITABLE_MOUNTS, (obj["metadata"]["name"], path)
                assert mount["name"] in volumes or mount["name"] in claims


def test_nested_mount_points_are_created_by_the_service_user(objects: list[dict[str, Any]]) -> None:
    """A volume mounted inside another needs its mount point made first, or it is root-owned."""
    for obj in _pods(objects):
        spec = pod_spec(obj)
        for container in spec["containers"]:
            paths = [m["mountPath"] for m in container.get("volumeMounts", [])]
            nested = [p for p in paths if any(p.startswith(q + "/") for q in paths if q != p)]
            made = [" ".join(c.get("command", [])) for c in spec.get("initContainers", [])]
            for path in nested:
                assert any(m.startswith("mkdir -p") and path in m.split() for m in made), (
                    obj["metadata"]["name"], path)


def test_termination_grace_outlasts_the_servers_grace(objects: list[dict[str, Any]]) -> None:
    for obj in _workloads(objects):
        spec = pod_spec(obj)
        container = spec["containers"][0]
        grace = float(_env(container, objects)["VITRINE_GRACE_SECONDS"])
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        assert spec["terminationGracePeriodSeconds"] > grace + float(pre_stop[1]) + 5, obj["metadata"]["name"]


def test_services_listen_on_all_interfaces_and_export_metrics(objects: list[dict[str, Any]]) -> None:
    for obj in _workloads(objects):
        container = pod_spec(obj)["containers"][0]
        env = _env(container, objects)
        assert env["VITRINE_HOST"] in ("[::]", "0.0.0.0")
        metrics = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
        assert int(env["VITRINE_METRICS_PORT"]) == metrics
        annotations = obj["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == metrics
        assert env["VITRINE_AUTH_TOKEN"].startswith("<from"), "the token must come from a Secret"


def test_config_keys_are_real_config_fields(objects: list[dict[str, Any]]) -> None:
    """Every VITRINE_* key names a field of a service's config (a typo would be silently ignored)."""
    fields: dict[str, set[str]] = {}
    for service in CONTRACT_PORTS:
        module = importlib.import_module(f"services.{service}.config")
        configs = [c for c in vars(module).values()
                   if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__name__.endswith("Config")]
        assert configs, f"services.{service}.config has no *Config dataclass"
        fields[service] = {f.name for c in configs for f in dataclasses.fields(c)}
    every = set().union(*fields.values())
    for key in config_data(objects):
        assert key.startswith("VITRINE_"), key
        rest = key.removeprefix("VITRINE_").lower()
        service = next((s for s in CONTRACT_PORTS if rest.startswith(s + "_") and rest != s + "_addresses"), None)
        if service and rest.removeprefix(service + "_") in fields[service]:
            continue
        assert rest in every, f"{key} is not a config field of any service"


# --- consistency between objects --------------------------------------------------------------

def test_profile_shards_match_the_addresses(overlay: str, objects: list[dict[str, Any]]) -> None:
    profile = by_kind(objects, "StatefulSet")["profile"]
    addresses = config_data(objects)["VITRINE_PROFILE_ADDRESSES"].strip().split(",")
    shards = profile["spec"]["replicas"]
    namespace = NAMESPACES[overlay]
    assert addresses == [f"profile-{i}.profile.{namespace}.svc:50052" for i in range(shards)]
    headless = by_kind(objects, "Service")[profile["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    (claim,) = profile["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["mountPath"]: m["name"] for m in pod_spec(profile)["containers"][0]["volumeMounts"]}
    assert mounts[DATA_DIR] == claim["metadata"]["name"]
    # LMDB's map size caps a shard's data: it must fit on the shard's volume, with room to spare.
    map_bytes = int(config_data(objects)["VITRINE_PROFILE_MAP_SIZE_MB"]) * 2**20
    assert map_bytes <= 0.95 * quantity(claim["spec"]["resources"]["requests"]["storage"])


def test_backend_addresses_name_real_services(objects: list[dict[str, Any]]) -> None:
    data = config_data(objects)
    services = by_kind(objects, "Service")
    for key, name in (("VITRINE_SEGMENTATION_ADDRESS", "segmentation"),
                      ("VITRINE_RECOMMENDATION_ADDRESS", "recommendation")):
        host, port = data[key].rsplit(":", 1)
        assert host.split(".")[0] == name and int(port) == services[name]["spec"]["ports"][0]["port"]


def test_services_select_running_pods(objects: list[dict[str, Any]]) -> None:
    workloads = [o for o in objects if o["kind"] in WORKLOAD_KINDS]
    for name, service in by_kind(objects, "Service").items():
        selector = service["spec"]["selector"]
        targets = [w for w in workloads if selector.items() <= pod_labels(w).items()]
        assert len(targets) == 1, name
        container_ports = {p["name"] for p in pod_spec(targets[0])["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, name


def test_disruption_budgets_and_autoscalers_match_workloads(objects: list[dict[str, Any]]) -> None:
    workloads = {o["metadata"]["name"]: o for o in objects if o["kind"] in WORKLOAD_KINDS}
    for name, pdb in by_kind(objects, "PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels(workloads[name]).items(), name
        assert pdb["spec"].get("maxUnavailable") == 1 or "minAvailable" in pdb["spec"]
    for name, hpa in by_kind(objects, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        deployment = by_kind(objects, target["kind"])[target["name"]]
        # The HPA owns the count: a replicas field would be reset by every apply.
        assert "replicas" not in deployment["spec"], name
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name
        # CPU utilisation is measured against the request: there must be one.
        assert "cpu" in pod_spec(deployment)["containers"][0]["resources"]["requests"]


def test_one_writer_of_the_shared_model_volume(overlay: str, objects: list[dict[str, Any]]) -> None:
    deployments = by_kind(objects, "Deployment")
    claim = by_kind(objects, "PersistentVolumeClaim")["recommendation-models"]
    if overlay == "prod":
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    writers = []
    for obj in _pods(objects):
        spec = pod_spec(obj)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                source = volumes.get(mount["name"], {}).get("persistentVolumeClaim", {})
                if source.get("claimName") != "recommendation-models":
                    continue
                assert mount["mountPath"] == MODELS_DIR
                if not mount.get("readOnly"):
                    writers.append(obj["metadata"]["name"])
                else:
                    assert source.get("readOnly") is True
    assert writers == ["recommendation-trainer"]
    trainer = deployments["recommendation-trainer"]
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"]["type"] == "Recreate"
    assert _service_of(deployments["recommendation"]) == _service_of(trainer) == "recommendation"


def test_train_cronjob_calls_the_trainer(objects: list[dict[str, Any]]) -> None:
    cron = by_kind(objects, "CronJob")["vitrine-train"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    args = pod_spec(cron)["containers"][0]["args"]
    assert args[0] == "train" and "--from-event-log" in args
    host, port = args[args.index("--address") + 1].rsplit(":", 1)
    trainer = by_kind(objects, "Service")[host]
    assert trainer["spec"]["selector"]["app.kubernetes.io/name"] == "recommendation-trainer"
    assert int(port) == trainer["spec"]["ports"][0]["port"] == CONTRACT_PORTS["recommendation"]


def test_config_and_secret_references_resolve(overlay: str, objects: list[dict[str, Any]]) -> None:
    config_maps = set(by_kind(objects, "ConfigMap"))
    secrets = set(by_kind(objects, "Secret"))
    guide = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    for obj in _pods(objects):
        spec = pod_spec(obj)
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    assert ref["name"] in EXTERNAL_SECRETS
                    assert f"create secret generic {ref['name']}" in guide
        for volume in spec.get("volumes", []):
            if "secret" in volume and volume["secret"]["secretName"] not in secrets:
                assert volume["secret"].get("optional") is True
    if overlay == "prod":
        assert not secrets, "production secrets are created out of band, never committed"


def test_one_image_for_every_container(overlay: str, objects: list[dict[str, Any]]) -> None:
    images = {c["image"] for o in _pods(objects) for c in pod_spec(o)["containers"]}
    assert len(images) == 1
    (image,) = images
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest"


def test_dev_is_small_and_prod_is_spread(overlay: str, objects: list[dict[str, Any]]) -> None:
    autoscaled = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
                  for h in by_kind(objects, "HorizontalPodAutoscaler").values()}
    for obj in _workloads(objects):
        name = obj["metadata"]["name"]
        replicas = autoscaled[name] if name in autoscaled else obj["spec"]["replicas"]
        if overlay == "dev" or name in ("recommendation-trainer", "journeys"):  # journeys: one LMDB writer
            assert replicas == 1, name
            continue
        assert replicas >= 3, name
        spec = pod_spec(obj)
        anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels(obj).items()
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    if overlay == "prod":
        dev = {o["metadata"]["name"]: o for o in _workloads(render("dev"))}
        for obj in _workloads(objects):
            mine = pod_spec(obj)["containers"][0]["resources"]["limits"]["memory"]
            small = pod_spec(dev[obj["metadata"]["name"]])["containers"][0]["resources"]["limits"]["memory"]
            assert quantity(mine) > quantity(small), obj["metadata"]["name"]
