"""Shared fixtures for the deployment tests: the rendered overlays, and the workloads in them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.k8s import kustomize

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
# Kubernetes versions whose schemas (shipped by kubernetes-validate) every object must pass:
# the oldest we support (native gRPC probes are GA since 1.27, CronJob timeZone since 1.27,
# StatefulSet PVC retention beta since 1.27) and a current one.
SCHEMA_VERSIONS = ("1.30.0", "1.33.0")

WORKLOAD_KINDS = ("Deployment", "StatefulSet")

_cache: dict[str, list[dict[str, Any]]] = {}


def render(overlay: str) -> list[dict[str, Any]]:
    """Objects of k8s/overlays/<overlay> (or k8s/base for "base"), rendered once per session."""
    if overlay not in _cache:
        path = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
        _cache[overlay] = kustomize.build(path)
    return _cache[overlay]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


def is_vitrine(obj: dict[str, Any]) -> bool:
    """A pod of Vitrine's own image (the base's part-of label), not a third-party one such as the
    prod overlay's NATS cluster, which is checked against its own chart (test_nats.py)."""
    if obj["kind"] not in (*WORKLOAD_KINDS, "CronJob"):
        return False
    return pod_labels(obj).get("app.kubernetes.io/part-of") == "vitrine"


def config_data(objects: list[dict[str, Any]]) -> dict[str, str]:
    return by_kind(objects, "ConfigMap")["vitrine-config"]["data"]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def objects(overlay: str) -> list[dict[str, Any]]:
    return render(overlay)
