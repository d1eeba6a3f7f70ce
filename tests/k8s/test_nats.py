"""The prod overlay's scale-out mode: a three-node NATS JetStream cluster (the NATS project's Helm
chart, rendered: k8s/overlays/prod/nats/) and the profile shards as its consumers.

The NATS objects are the chart's, so they are checked for what Vitrine relies on (cluster of three,
JetStream on a PVC per node, the chart's HTTP probes, the namespace's restricted Pod Security
Standard, who may connect), not against the Vitrine image's rules in test_manifests.py. Their
nats.conf is checked by the real nats-server where it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats as nats_client
import pytest

from services.eventlog import config as eventlog_config
from services.profile import config as profile_config
from tests.k8s.conftest import K8S, by_kind, config_data, pod_labels, pod_spec, render
from tests.k8s.test_manifests import quantity
from tests.k8s.test_network_policies import can_connect
from vitrine.nats_server import nats_server_binary
from vitrine.ports import HOST, free_ports

NO_SERVER = ("nats-server is not installed (Debian package nats-server): the rendered nats.conf is not "
             "run by the server itself")
CLUSTER_START_SECONDS = 30.0
NATS_DIR = K8S / "overlays" / "prod" / "nats"
CHART_VERSION = "2.14.2"
NODES = 3
CLIENT_PORT, CLUSTER_PORT, MONITOR_PORT = 4222, 6222, 8222


@pytest.fixture(scope="module")
def prod() -> list[dict[str, Any]]:
    return render("prod")


@pytest.fixture(scope="module")
def nats(prod: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(prod, "StatefulSet")["nats"]


def _container(nats: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(nats)["containers"]
    return container


def _nats_conf(prod: list[dict[str, Any]], nats: dict[str, Any]) -> str:
    volumes = {v["name"]: v for v in pod_spec(nats)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(nats)["volumeMounts"]}
    config_dir, config_file = _container(nats)["args"][1].rsplit("/", 1)
    config_map = by_kind(prod, "ConfigMap")[volumes[mounts[config_dir]]["configMap"]["name"]]
    text: str = config_map["data"][config_file]
    return text


def parse_conf(text: str) -> dict[str, Any]:
    """The chart writes nats.conf as JSON with a few unquoted values (`$SERVER_NAME`, `500Gi`)."""
    quoted = re.sub(r':\s*([$A-Za-z0-9][^\s",}\]]*)(\s*[,\n}])',
                    lambda m: m.group(0) if re.fullmatch(r"-?\d+|true|false", m.group(1))
                    else f': "{m.group(1)}"{m.group(2)}', text)
    parsed: dict[str, Any] = json.loads(quoted)
    return parsed


def _env(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(by_kind(objects, "ConfigMap")[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


# --- the NATS cluster -------------------------------------------------------------------------

def test_three_nodes_in_one_cluster_with_jetstream_on_a_volume_each(prod: list[dict[str, Any]],
                                                                    nats: dict[str, Any]) -> None:
    assert nats["spec"]["replicas"] == NODES
    headless = by_kind(prod, "Service")[nats["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    # Nodes find each other before they are Ready (a cluster forms before JetStream is up).
    assert headless["spec"]["publishNotReadyAddresses"] is True
    conf = parse_conf(_nats_conf(prod, nats))
    ports = {p["name"]: p["containerPort"] for p in _container(nats)["ports"]}
    assert ports == {"nats": CLIENT_PORT, "cluster": CLUSTER_PORT, "monitor": MONITOR_PORT}
    assert conf["port"] == CLIENT_PORT and conf["http_port"] == MONITOR_PORT
    assert conf["cluster"]["port"] == CLUSTER_PORT
    name, service = nats["metadata"]["name"], headless["metadata"]["name"]
    assert conf["cluster"]["routes"] == [f"nats://{name}-{i}.{service}:{CLUSTER_PORT}" for i in range(NODES)]
    # JetStream: file storage only, in the directory the PVC is mounted on, capped at its size.
    jetstream = conf["jetstream"]
    assert jetstream["max_memory_store"] == 0
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    mounts = {m["mountPath"]: m["name"] for m in _container(nats)["volumeMounts"]}
    assert mounts[jetstream["store_dir"]] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"]
    assert quantity(jetstream["max_file_store"]) == quantity(claim["spec"]["resources"]["requests"]["storage"])
    # Each node's name is its pod's (SERVER_NAME from the pod name): stable across restarts,
    # which JetStream's Raft groups require.
    env = _env(_container(nats), prod)
    assert conf["server_name"] == "$SERVER_NAME" and env["SERVER_NAME"] == "$(POD_NAME)"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_nats_server_accepts_the_rendered_config(prod: list[dict[str, Any]], nats: dict[str, Any],
                                                 tmp_path: Path) -> None:
    server = nats_server_binary()
    if server is None:
        pytest.skip(NO_SERVER)
    path = tmp_path / "nats.conf"
    path.write_text(_nats_conf(prod, nats), encoding="utf-8")
    result = subprocess.run([server, "-c", str(path), "-t"], capture_output=True, text=True, timeout=30,
                            env={"SERVER_NAME": "nats-0", "PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def loopback_conf(text: str, name: str, ports: dict[str, int], routes: list[int], store: Path) -> str:
    """The rendered nats.conf for one node on this machine: only addresses and files move
    (loopback ports instead of the pod's, routes to the other local nodes, a temporary store and
    pid file)."""
    conf = parse_conf(text)
    conf.update(host=HOST, port=ports["nats"], http_port=ports["monitor"], server_name=name)
    conf["cluster"].update(host=HOST, port=ports["cluster"], routes=[f"nats://{HOST}:{p}" for p in routes])
    conf["jetstream"]["store_dir"] = str(store)
    conf["pid_file"] = str(store.parent / f"{name}.pid")
    # A size stays unquoted, as the chart writes it (nats-server reads "500Gi" only as a bare word).
    size = conf["jetstream"]["max_file_store"]
    return json.dumps(conf, indent=2).replace(f'"max_file_store": "{size}"', f'"max_file_store": {size}')


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status, answer.read().decode()
    except OSError as err:
        return getattr(err, "code", 0), str(err)


@contextlib.contextmanager
def _cluster_from_rendered_conf(text: str, root: Path) -> Iterator[list[dict[str, int]]]:
    binary = nats_server_binary()
    if binary is None:
        pytest.skip(NO_SERVER)
    ports = free_ports(3 * NODES)
    nodes = [{"nats": ports[i], "cluster": ports[NODES + i], "monitor": ports[2 * NODES + i]} for i in range(NODES)]
    procs = []
    try:
        for i, node in enumerate(nodes):
            path = root / f"nats-{i}.conf"
            others = [n["cluster"] for j, n in enumerate(nodes) if j != i]
            path.write_text(loopback_conf(text, f"nats-{i}", node, others, root / f"store-{i}"), encoding="utf-8")
            log = (root / f"nats-{i}.log").open("ab")
            procs.append(subprocess.Popen([binary, "-c", str(path)], stdout=log, stderr=subprocess.STDOUT))
            log.close()
        yield nodes
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


async def _publish_replicated(url: str) -> tuple[int, int]:
    client = await nats_client.connect(url, connect_timeout=2, max_reconnect_attempts=2)
    try:
        js = client.jetstream(timeout=5)
        await js.add_stream(name="CHART_CHECK", subjects=["chart.check.>"], num_replicas=NODES)
        ack = await js.publish("chart.check.0", b"event", timeout=5)
        info = await js.stream_info("CHART_CHECK")
        return ack.seq, 1 + len(info.cluster.replicas or []) if info.cluster else 0
    finally:
        await client.close()


def test_the_rendered_config_forms_a_jetstream_cluster_that_replicates(
        prod: list[dict[str, Any]], nats: dict[str, Any], tmp_path: Path) -> None:
    """Three real nats-servers on the chart's nats.conf (addresses moved to loopback): the chart's
    readiness and liveness endpoints answer 200 on each, one meta leader for three peers, and a
    stream with R=3 (as the profile service creates VITRINE_EVENTS) acknowledges a publish."""
    text = _nats_conf(prod, nats)
    container = _container(nats)
    paths = [container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")]
    with _cluster_from_rendered_conf(text, tmp_path) as nodes:
        deadline = time.monotonic() + CLUSTER_START_SECONDS
        pending = [(n["monitor"], path) for n in nodes for path in paths]
        while pending and time.monotonic() < deadline:
            pending = [(port, path) for port, path in pending
                       if _get(f"http://{HOST}:{port}{path}")[0] != 200]
            time.sleep(0.2)  # the servers elect a meta leader in their own time: nothing to wait on
        assert not pending, f"not healthy within {CLUSTER_START_SECONDS} s: {pending}"
        status, body = _get(f"http://{HOST}:{nodes[0]['monitor']}/jsz")
        meta = json.loads(body)["meta_cluster"]
        assert status == 200 and meta["cluster_size"] == NODES and meta["leader"]
        seq, copies = asyncio.run(_publish_replicated(f"nats://{HOST}:{nodes[1]['nats']}"))
        assert seq == 1 and copies == NODES


def test_the_chart_probes_its_monitoring_port(nats: dict[str, Any]) -> None:
    container = _container(nats)
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "monitor", probe
        paths[probe] = get["path"]
    assert paths == {"startupProbe": "/healthz", "readinessProbe": "/healthz?js-server-only=true",
                     "livenessProbe": "/healthz?js-enabled-only=true"}
    # Lame-duck shutdown: clients move to other nodes before this one stops.
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "nats-server"


def test_nats_pods_pass_the_restricted_standard_and_are_sized(nats: dict[str, Any]) -> None:
    spec = pod_spec(nats)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0 and pod["runAsGroup"] > 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(forbidden), forbidden
    container = _container(nats)
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx.get("privileged")
    # The chart's advice: requests = limits (Guaranteed QoS, GOMAXPROCS = the CPU limit), and
    # GOMEMLIMIT below the memory limit.
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    gomemlimit = _env(container, []).get("GOMEMLIMIT", "")
    assert gomemlimit.endswith("iB")
    assert quantity(gomemlimit.removesuffix("B")) < quantity(resources["limits"]["memory"])
    # Writable: the JetStream PVC and the pid emptyDir; the config comes from a ConfigMap.
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {t["metadata"]["name"] for t in nats["spec"]["volumeClaimTemplates"]}
    for mount in container["volumeMounts"]:
        source = volumes.get(mount["name"], {})
        assert mount["name"] in claims or "emptyDir" in source or "configMap" in source, mount


def test_nats_is_spread_and_drained_one_node_at_a_time(prod: list[dict[str, Any]], nats: dict[str, Any]) -> None:
    spec = pod_spec(nats)
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels(nats).items()
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    pdb = by_kind(prod, "PodDisruptionBudget")["nats"]
    # Three nodes, R=3: one node down keeps a quorum of two for every stream.
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(nats).items()


def test_the_vendored_file_names_its_chart_and_values(nats: dict[str, Any]) -> None:
    header = (NATS_DIR / "nats.yaml").read_text(encoding="utf-8").split("\n---", 1)[0]
    assert f"chart:   nats {CHART_VERSION}" in header
    assert f"helm template vitrine-prod nats/nats --version {CHART_VERSION}" in header
    assert "-f k8s/overlays/prod/nats/values.yaml" in header
    assert (NATS_DIR / "values.yaml").is_file()
    labels = nats["spec"]["template"]["metadata"]["labels"]
    assert labels["helm.sh/chart"] == f"nats-{CHART_VERSION}"
    assert _container(nats)["image"] == f"nats:{labels['app.kubernetes.io/version']}-alpine"


# --- the profile shards as its consumers --------------------------------------------------------

def test_profile_shards_consume_the_event_log(prod: list[dict[str, Any]], nats: dict[str, Any]) -> None:
    profile = by_kind(prod, "StatefulSet")["profile"]
    env = _env(pod_spec(profile)["containers"][0], prod)
    host, port = env["VITRINE_EVENT_LOG"].removeprefix("nats://").rsplit(":", 1)
    client = by_kind(prod, "Service")[host]
    assert client["spec"]["selector"].items() <= pod_labels(nats).items()
    assert int(port) == CLIENT_PORT in {p["port"] for p in client["spec"]["ports"]}
    # Shard N is pod profile-N: the index comes from the pod's ordinal.
    assert env["VITRINE_PROFILE_SHARD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    shards = profile["spec"]["replicas"]
    assert int(env["VITRINE_SHARD_COUNT"]) == shards
    assert len(env["VITRINE_PROFILE_ADDRESSES"].split(",")) == shards
    # Partitions are fixed for the stream's life; each shard must own at least one.
    assert int(env["VITRINE_EVENT_LOG_PARTITIONS"]) >= shards
    assert int(env["VITRINE_EVENT_LOG_REPLICAS"]) == NODES == nats["spec"]["replicas"]


def test_the_stream_outlives_the_profile_retention_window(prod: list[dict[str, Any]]) -> None:
    days = int(config_data(prod).get("VITRINE_PROFILE_RETENTION_DAYS", profile_config.DEFAULT_RETENTION_DAYS))
    assert days <= eventlog_config.MAX_AGE_DAYS


def test_dev_stays_embedded() -> None:
    dev = render("dev")
    assert "nats" not in by_kind(dev, "StatefulSet")
    assert not config_data(dev).get("VITRINE_EVENT_LOG")
    profile = by_kind(dev, "StatefulSet")["profile"]
    assert "VITRINE_PROFILE_SHARD_INDEX" not in _env(pod_spec(profile)["containers"][0], dev)


# --- who may reach it ---------------------------------------------------------------------------

SOURCES = {"profile": ("StatefulSet", "profile"), "gateway": ("Deployment", "gateway"),
           "recommendation": ("Deployment", "recommendation"),
           "recommendation-trainer": ("Deployment", "recommendation-trainer"),
           "journeys": ("Deployment", "journeys"), "segmentation": ("Deployment", "segmentation"),
           "train-job": ("CronJob", "vitrine-train"), "nats": ("StatefulSet", "nats")}

NATS_MATRIX = [
    ("profile", CLIENT_PORT, True),
    ("gateway", CLIENT_PORT, True),
    ("recommendation", CLIENT_PORT, True),
    ("recommendation-trainer", CLIENT_PORT, True),
    ("train-job", CLIENT_PORT, True),
    ("journeys", CLIENT_PORT, True),
    ("admin", CLIENT_PORT, True),
    ("segmentation", CLIENT_PORT, False),
    ("stranger", CLIENT_PORT, False),
    ("store", CLIENT_PORT, False),
    ("nats", CLUSTER_PORT, True),
    ("profile", CLUSTER_PORT, False),
    ("stranger", CLUSTER_PORT, False),
    ("monitoring", MONITOR_PORT, False),
    ("profile", MONITOR_PORT, False),
]


@pytest.mark.parametrize(("source", "port", "allowed"), NATS_MATRIX)
def test_nats_reachability(prod: list[dict[str, Any]], nats: dict[str, Any], source: str, port: int,
                           allowed: bool) -> None:
    policies = list(by_kind(prod, "NetworkPolicy").values())
    namespace = {"kubernetes.io/metadata.name": nats["metadata"]["namespace"]}
    if source in SOURCES:
        src_ns, src_labels = namespace, pod_labels(by_kind(prod, SOURCES[source][0])[SOURCES[source][1]])
    else:
        src_ns, src_labels = {
            "store": ({"kubernetes.io/metadata.name": "shop", "vitrine.io/client": "true"}, {"app": "storefront"}),
            "stranger": (namespace, {"app": "debug-shell"}),
            "admin": (namespace, {"vitrine.io/role": "admin"}),
            "monitoring": ({"kubernetes.io/metadata.name": "monitoring"}, {"app.kubernetes.io/name": "prometheus"}),
        }[source]
    assert can_connect(policies, namespace, pod_labels(nats), port, src_ns, src_labels) is allowed


def test_parse_conf_itself() -> None:
    conf = parse_conf('{\n  "a": $X,\n  "b": {\n    "c": 500Gi,\n    "d": 0\n  },\n  "e": true,\n  "f": "s"\n}\n')
    assert conf == {"a": "$X", "b": {"c": "500Gi", "d": 0}, "e": True, "f": "s"}
