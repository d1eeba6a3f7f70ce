"""The optional TLS component (k8s/components/tls) on top of the prod overlay.

Besides schema and wiring checks, the exec probe it installs is run, exactly as rendered,
against a real Vitrine server serving TLS (services.common.server.build_server).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from services.common.config import ServerConfig
from services.common.server import build_server
from tests.k8s import kustomize
from tests.k8s.conftest import K8S, SCHEMA_VERSIONS, by_kind, config_data, is_vitrine, pod_spec
from tests.reliability.tiny_service import TinyService

CONTRACT_PORTS = {"gateway": 50051, "profile": 50052, "segmentation": 50053, "recommendation": 50054,
                  "journeys": 50055}
TLS_DIR = "/etc/vitrine/tls"


@pytest.fixture(scope="module")
def tls_overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An overlay that is prod plus the TLS component, as docs/deployment.md tells users to write."""
    root = tmp_path_factory.mktemp("prod-tls")
    prod = os.path.relpath(K8S / "overlays" / "prod", root)
    tls = os.path.relpath(K8S / "components" / "tls", root)
    (root / "kustomization.yaml").write_text(f"resources: [{prod}]\ncomponents: [{tls}]\n")
    return root


@pytest.fixture(scope="module")
def tls_objects(tls_overlay: Path) -> list[dict[str, Any]]:
    return kustomize.build(tls_overlay)  # skips, saying why, where kubectl is absent


def _probes(objects: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet") and is_vitrine(obj):
            container = pod_spec(obj)["containers"][0]
            service = container["args"][1]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                out.append((service, kind, container[kind]))
    return out


def test_the_component_adds_the_tls_secret_to_every_workload_of_prod(tls_objects: list[dict[str, Any]]) -> None:
    prod = {(o["kind"], o["metadata"]["name"]) for o in kustomize.build(K8S / "overlays" / "prod")}
    assert {(o["kind"], o["metadata"]["name"]) for o in tls_objects} == prod  # the same objects, no more
    workloads = [o for o in tls_objects if o["kind"] in ("Deployment", "StatefulSet") and is_vitrine(o)]
    assert len(workloads) >= 5
    for obj in workloads:
        names = {v["name"] for v in pod_spec(obj)["volumes"]}
        assert any(v.get("secret", {}).get("secretName") == "vitrine-tls" for v in pod_spec(obj)["volumes"]), names


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_schema(tls_objects: list[dict[str, Any]], version: str) -> None:
    for obj in tls_objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_tls_settings_point_into_the_mounted_secret(tls_objects: list[dict[str, Any]]) -> None:
    data = config_data(tls_objects)
    files = {data[f"VITRINE_TLS_{name}_FILE"] for name in ("CERT", "KEY", "CA")}
    assert files == {f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key", f"{TLS_DIR}/ca.crt"}
    assert data["VITRINE_GATEWAY_BACKEND_TLS"] == "true"
    for obj in tls_objects:
        if obj["kind"] in ("Deployment", "StatefulSet") and is_vitrine(obj):
            spec = pod_spec(obj)
            mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert volumes[mounts[TLS_DIR]]["secret"]["secretName"] == "vitrine-tls"
    # the rest of prod is untouched
    assert by_kind(tls_objects, "StatefulSet")["profile"]["spec"]["replicas"] == 4


def test_every_probe_checks_health_over_tls(tls_objects: list[dict[str, Any]]) -> None:
    probes = _probes(tls_objects)
    assert len(probes) == 18
    for service, kind, probe in probes:
        assert "grpc" not in probe, (service, kind)
        command = probe["exec"]["command"]
        assert command[:2] == ["python", "-c"]
        assert int(command[3]) == CONTRACT_PORTS[service], (service, kind)
        assert command[4] == f"{TLS_DIR}/ca.crt"
        assert probe["timeoutSeconds"] >= 5


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


async def _run_probe(command: list[str], port: int, ca: Path) -> int:
    code = command[2]
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, str(port), str(ca),
                                                   stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode


async def test_the_rendered_probe_against_a_real_tls_server(
        tls_objects: list[dict[str, Any]], certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    command = _probes(tls_objects)[0][2]["exec"]["command"]
    config = ServerConfig(host="127.0.0.1", port=0, tls_cert_file=str(cert), tls_key_file=str(key))
    running = await build_server(config, TinyService())  # health only
    try:
        assert await _run_probe(command, running.port, cert) == 0
        await running.health.enter_graceful_shutdown()  # NOT_SERVING, as during a SIGTERM
        assert await _run_probe(command, running.port, cert) != 0
    finally:
        await running.stop(0)
    assert await _run_probe(command, running.port, cert) != 0  # nothing listening
