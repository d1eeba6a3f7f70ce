"""The console's Kubernetes component (k8s/components/console) added to each overlay: valid
objects, HTTP probes on /healthz, the strict security context, its secrets, its volume, and who
may reach whom under the NetworkPolicies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.console.config import DEFAULT_PORT, ConsoleConfig
from tests.k8s import kustomize
from tests.k8s.conftest import K8S, OVERLAYS, SCHEMA_VERSIONS, by_kind, pod_labels, pod_spec
from tests.k8s.test_network_policies import MONITORING_NS, STORE_NS, can_connect

INGRESS_NS = {"kubernetes.io/metadata.name": "ingress-nginx", "vitrine.io/console-client": "true"}


def with_console(overlay: str, tmp_path: Path) -> Path:
    """A kustomization: the overlay plus the console component (paths relative, as kustomize wants)."""
    root = tmp_path / overlay
    root.mkdir()
    rel = os.path.relpath(K8S, root)
    (root / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{rel}/overlays/{overlay}"], "components": [f"{rel}/components/console"]}))
    return root


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> list[dict[str, Any]]:
    return kustomize.build(with_console(request.param, tmp_path))


def console_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = pod_spec(by_kind(objects, "Deployment")["console"])["containers"]
    return container


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_objects_pass_the_kubernetes_schema(rendered: list[dict[str, Any]], version: str) -> None:
    for obj in rendered:
        if obj["metadata"]["name"].startswith("console"):
            kubernetes_validate.validate(obj, version, strict=True)


def test_probes_security_and_settings(rendered: list[dict[str, Any]]) -> None:
    deployment = by_kind(rendered, "Deployment")["console"]
    spec = pod_spec(deployment)
    container = console_container(rendered)
    assert container["args"] == ["serve", "console"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": DEFAULT_PORT, "metrics": 9090}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"] and spec["securityContext"]["runAsNonRoot"]
    assert spec["automountServiceAccountToken"] is False
    env = {e["name"]: e for e in container["env"]}
    assert env["VITRINE_CONSOLE_PRODUCTION"]["value"] == "1"  # no default password, Secure cookies
    assert env["VITRINE_CONSOLE_PASSWORD_HASH"]["valueFrom"]["secretKeyRef"]["name"] == "vitrine-console"
    assert env["VITRINE_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "vitrine-auth"
    fields = {f.upper() for f in ConsoleConfig.__dataclass_fields__}
    for name in env:
        assert name.removeprefix("VITRINE_CONSOLE_").removeprefix("VITRINE_") in fields, name
    services = by_kind(rendered, "Service")
    for name in ("VITRINE_CONSOLE_GATEWAY_ADDRESS",):
        host, port = env[name]["value"].rsplit(":", 1)
        assert int(port) == services[host]["spec"]["ports"][0]["port"]
    # The audit log lives on its own volume; one replica writes it.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/var/lib/vitrine"]]["persistentVolumeClaim"]["claimName"] == "console-audit"
    assert "console-audit" in by_kind(rendered, "PersistentVolumeClaim")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    grace = float(by_kind(rendered, "ConfigMap")["vitrine-config"]["data"]["VITRINE_GRACE_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] > grace + 5 + 5
    service = services["console"]
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()


@pytest.mark.parametrize(("source", "destination", "port", "allowed"), [
    ("console", "gateway", 50051, True),
    ("console", "segmentation", 50053, True),
    ("console", "recommendation", 50054, True),
    ("ingress", "console", 8080, True),
    ("store", "console", 8080, False),
    ("stranger", "console", 8080, False),
    ("monitoring", "console", 9090, True),
    ("monitoring", "console", 8080, False),
])
def test_reachability(rendered: list[dict[str, Any]], source: str, destination: str, port: int,
                      allowed: bool) -> None:
    policies = list(by_kind(rendered, "NetworkPolicy").values())
    namespace = {"kubernetes.io/metadata.name": policies[0]["metadata"]["namespace"]}
    workloads = {"console": ("Deployment", "console"), "gateway": ("Deployment", "gateway"),
                 "segmentation": ("Deployment", "segmentation"), "recommendation": ("Deployment", "recommendation")}
    if source in workloads:
        src_ns, src_labels = namespace, pod_labels(by_kind(rendered, workloads[source][0])[workloads[source][1]])
    else:
        src_ns, src_labels = {"ingress": (INGRESS_NS, {"app": "ingress-nginx"}),
                              "store": (STORE_NS, {"app": "storefront"}),
                              "stranger": (namespace, {"app": "debug-shell"}),
                              "monitoring": (MONITORING_NS, {"app.kubernetes.io/name": "prometheus"})}[source]
    kind, name = workloads[destination]
    dst_labels = pod_labels(by_kind(rendered, kind)[name])
    assert can_connect(policies, namespace, dst_labels, port, src_ns, src_labels) is allowed
