"""Who can reach whom under the rendered NetworkPolicies.

A small evaluator of the Kubernetes NetworkPolicy ingress semantics (a pod selected by any
Ingress policy accepts a connection only if one of those policies' rules allows its source and
port; podSelector alone means the policy's namespace; namespaceSelector alone means any pod in
the matching namespaces) answers the question for the pairs that matter.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s.conftest import by_kind, pod_labels

STORE_NS = {"kubernetes.io/metadata.name": "shop", "vitrine.io/client": "true"}
MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}
OTHER_NS = {"kubernetes.io/metadata.name": "other"}


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_allows(peer: dict[str, Any], policy_ns: dict[str, str], src_ns: dict[str, str],
                 src_labels: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        return False  # pods are addressed by labels here, never by IP
    # namespaceSelector picks namespaces; without it the peer is in the policy's own namespace.
    ns_ok = _selects(peer["namespaceSelector"], src_ns) if "namespaceSelector" in peer else src_ns == policy_ns
    return ns_ok and _selects(peer.get("podSelector"), src_labels)


def can_connect(policies: list[dict[str, Any]], namespace: dict[str, str], dst_labels: dict[str, str],
                port: int, src_ns: dict[str, str], src_labels: dict[str, str]) -> bool:
    selecting = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and _selects(p["spec"]["podSelector"], dst_labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(p.get("port") == port for p in ports):
                continue
            peers = rule.get("from")
            if peers is None or any(_peer_allows(peer, namespace, src_ns, src_labels) for peer in peers):
                return True
    return False


def _labels(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, str]:
    return pod_labels(by_kind(objects, kind)[name])


# (source, destination, port, allowed)
MATRIX = [
    ("store", "gateway", 50051, True),
    ("store", "profile", 50052, False),
    ("store", "segmentation", 50053, False),
    ("store", "recommendation", 50054, False),
    ("store", "recommendation-trainer", 50054, False),
    ("other-namespace", "gateway", 50051, False),
    ("stranger", "gateway", 50051, False),
    ("stranger", "profile", 50052, False),
    ("stranger", "recommendation", 50054, False),
    ("gateway", "profile", 50052, True),
    ("gateway", "segmentation", 50053, True),
    ("gateway", "recommendation", 50054, True),
    ("gateway", "recommendation-trainer", 50054, False),
    ("segmentation", "profile", 50052, True),
    ("segmentation", "recommendation", 50054, False),
    ("recommendation", "profile", 50052, True),
    ("recommendation", "segmentation", 50053, False),
    ("recommendation-trainer", "profile", 50052, True),
    ("train-job", "recommendation-trainer", 50054, True),
    ("train-job", "recommendation", 50054, False),
    ("train-job", "profile", 50052, False),
    ("admin", "segmentation", 50053, True),
    ("admin", "recommendation", 50054, True),
    ("monitoring", "gateway", 9090, True),
    ("monitoring", "profile", 9090, True),
    ("monitoring", "profile", 50052, False),
    ("store", "profile", 9090, False),
]

WORKLOADS = {
    "gateway": ("Deployment", "gateway"),
    "segmentation": ("Deployment", "segmentation"),
    "recommendation": ("Deployment", "recommendation"),
    "recommendation-trainer": ("Deployment", "recommendation-trainer"),
    "profile": ("StatefulSet", "profile"),
    "train-job": ("CronJob", "vitrine-train"),
}


@pytest.mark.parametrize(("source", "destination", "port", "allowed"), MATRIX)
def test_reachability(objects: list[dict[str, Any]], source: str, destination: str, port: int,
                      allowed: bool) -> None:
    policies = list(by_kind(objects, "NetworkPolicy").values())
    namespace_name = policies[0]["metadata"]["namespace"]
    namespace = {"kubernetes.io/metadata.name": namespace_name}
    if source in WORKLOADS:
        src_ns, src_labels = namespace, _labels(objects, *WORKLOADS[source])
    else:
        src_ns, src_labels = {
            "store": (STORE_NS, {"app": "storefront"}),
            "other-namespace": (OTHER_NS, {"app": "storefront"}),
            "stranger": (namespace, {"app": "debug-shell"}),
            "admin": (namespace, {"vitrine.io/role": "admin"}),
            "monitoring": (MONITORING_NS, {"app.kubernetes.io/name": "prometheus"}),
        }[source]
    dst_labels = _labels(objects, *WORKLOADS[destination])
    assert can_connect(policies, namespace, dst_labels, port, src_ns, src_labels) is allowed


def test_every_pod_is_covered_by_the_default_deny(objects: list[dict[str, Any]]) -> None:
    deny = by_kind(objects, "NetworkPolicy")["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")


def test_the_evaluator_itself() -> None:
    ns = {"kubernetes.io/metadata.name": "a"}
    policy = {"spec": {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "y"}}}],
                                    "ports": [{"port": 1}]}]}}
    assert can_connect([policy], ns, {"app": "x"}, 1, ns, {"app": "y"})
    assert not can_connect([policy], ns, {"app": "x"}, 2, ns, {"app": "y"})
    assert not can_connect([policy], ns, {"app": "x"}, 1, {"kubernetes.io/metadata.name": "b"}, {"app": "y"})
    assert can_connect([policy], ns, {"app": "z"}, 1, ns, {"app": "q"})  # not selected: open
