"""The Python kustomize subset: unit behaviour, and agreement with a real kustomize when present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s import kustomize_lite
from tests.k8s.conftest import K8S, render

REAL_KUSTOMIZE_TIMEOUT = 120


def _real_kustomize() -> list[str] | None:
    """A command that renders a kustomization directory, if this machine has one."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        probe = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, timeout=60, check=False)
        if probe.returncode == 0:
            return ["kubectl", "kustomize"]
    return None


def _assert_like_real_kustomize(path: Path, mine: list[dict]) -> None:
    """Compare with a real kustomize's rendering of `path`, when this machine has one."""
    command = _real_kustomize()
    if command is None:
        return
    result = subprocess.run([*command, str(path)], capture_output=True, text=True,
                            timeout=REAL_KUSTOMIZE_TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr
    real = {kustomize_lite.object_id(o): o for o in yaml.safe_load_all(result.stdout) if o}
    ours = {kustomize_lite.object_id(o): o for o in mine}
    assert sorted(ours) == sorted(real)
    for key, obj in ours.items():
        assert obj == real[key], f"{key} differs from {' '.join(command)}"


@pytest.mark.parametrize("name", ["base", "dev", "prod"])
def test_renderer_agrees_with_real_kustomize(name: str) -> None:
    if _real_kustomize() is None:
        pytest.skip("no kustomize or kubectl on PATH: the cross-check needs a real kustomize "
                    "(the other k8s tests use the Python renderer alone)")
    path = K8S / "base" if name == "base" else K8S / "overlays" / name
    _assert_like_real_kustomize(path, render(name))


def _write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: example/web:1.0
          args: ["a", "b"]
          env: [{name: A, value: "1"}, {name: B, value: "2"}]
        - name: sidecar
          image: busybox
---
apiVersion: v1
kind: Namespace
metadata: {name: placeholder}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {k: v, gone: x}
"""


def test_overlay_transformers(tmp_path: Path) -> None:
    _write(tmp_path / "base", {"kustomization.yaml": "resources: [all.yaml]\n", "all.yaml": DEPLOYMENT})
    _write(tmp_path / "overlay", {
        "kustomization.yaml": """
namespace: shop
resources: [../base]
labels: [{pairs: {env: test}}]
replicas: [{name: web, count: 3}]
images: [{name: example/web, newName: registry.local/web, newTag: "2.0"}]
secretGenerator: [{name: token, literals: [t=s3cret], files: [extra=secret.txt]}]
generatorOptions: {disableNameSuffixHash: true}
patches:
  - path: patch.yaml
""",
        "secret.txt": "xyz",
        "patch.yaml": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - name: web
          args: ["c"]
          env: [{name: B, value: "20"}, {name: C, value: "3"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {k: w, gone: null}
""",
    })
    rendered = kustomize_lite.build(tmp_path / "overlay")
    _assert_like_real_kustomize(tmp_path / "overlay", rendered)
    objects = {o["kind"]: o for o in rendered}
    web = objects["Deployment"]
    assert web["metadata"] == {"name": "web", "namespace": "shop", "labels": {"app": "web", "env": "test"}}
    assert web["spec"]["selector"] == {"matchLabels": {"app": "web"}}  # selectors untouched
    assert web["spec"]["replicas"] == 3
    web_container, sidecar = web["spec"]["template"]["spec"]["containers"]
    assert web_container["image"] == "registry.local/web:2.0"
    assert web_container["args"] == ["c"]  # atomic list: replaced
    # merged by name; kustomize puts the patch's items first, then the untouched ones
    assert web_container["env"] == [{"name": "B", "value": "20"}, {"name": "C", "value": "3"},
                                    {"name": "A", "value": "1"}]
    assert sidecar == {"name": "sidecar", "image": "busybox"}
    assert objects["Namespace"]["metadata"]["name"] == "shop"
    assert "namespace" not in objects["Namespace"]["metadata"]
    assert objects["ConfigMap"]["data"] == {"k": "w"}
    assert objects["Secret"]["data"] == {"t": "czNjcmV0", "extra": "eHl6"}
    assert objects["Secret"]["type"] == "Opaque"


def test_list_merge_order_follows_kustomize(tmp_path: Path) -> None:
    _write(tmp_path, {
        "kustomization.yaml": "resources: [d.yaml]\npatches: [{path: p.yaml}]\n",
        "d.yaml": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - {name: a, image: x, env: [{name: A, value: "1"}, {name: B, value: "2"}, {name: C, value: "3"}]}
        - {name: b, image: y}
        - {name: c, image: z}
""",
        "p.yaml": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - {name: c, image: zz}
        - {name: new, image: n}
        - {name: a, env: [{name: D, value: "4"}, {name: B, value: "20"}]}
""",
    })
    rendered = kustomize_lite.build(tmp_path)
    _assert_like_real_kustomize(tmp_path, rendered)
    containers = rendered[0]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["c", "new", "a", "b"]
    assert [e["name"] for e in containers[2]["env"]] == ["D", "B", "A", "C"]
    assert containers[0]["image"] == "zz"


@pytest.mark.parametrize("kustomization", [
    "resources: [a.yaml]\ncommonAnnotations: {a: b}\n",
    "resources: [a.yaml]\nlabels: [{pairs: {a: b}, includeSelectors: true}]\n",
    "resources: [a.yaml]\nsecretGenerator: [{name: s, literals: [a=b]}]\n",
    "resources: [a.yaml]\npatches: [{patch: '[{\"op\": \"add\", \"path\": \"/x\", \"value\": 1}]', "
    "target: {kind: ConfigMap, name: cfg}}]\n",
    "resources: [a.yaml]\npatches: [{path: delete.yaml}]\n",
    "resources: [../outside.yaml]\n",
])
def test_unsupported_features_are_refused(tmp_path: Path, kustomization: str) -> None:
    (tmp_path / "outside.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: o}\n")
    _write(tmp_path / "k", {"kustomization.yaml": kustomization,
                            "a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {}\n",
                            "delete.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n$patch: delete\n"})
    with pytest.raises(kustomize_lite.Unsupported):
        kustomize_lite.build(tmp_path / "k")


def test_a_patch_without_a_target_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, {"kustomization.yaml": "resources: [a.yaml]\npatches: [{path: p.yaml}]\n",
                      "a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n",
                      "p.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo}\ndata: {a: b}\n"})
    with pytest.raises(ValueError, match="no ConfigMap/typo"):
        kustomize_lite.build(tmp_path)


def test_duplicate_objects_are_an_error(tmp_path: Path) -> None:
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
    _write(tmp_path, {"kustomization.yaml": "resources: [a.yaml, b.yaml]\n", "a.yaml": cm, "b.yaml": cm})
    with pytest.raises(ValueError, match="defined twice"):
        kustomize_lite.build(tmp_path)


@pytest.mark.parametrize(("image", "parts"), [
    ("vitrine", ("vitrine", "", "")),
    ("vitrine:dev", ("vitrine", "dev", "")),
    ("localhost:5000/vitrine", ("localhost:5000/vitrine", "", "")),
    ("localhost:5000/vitrine:1.2", ("localhost:5000/vitrine", "1.2", "")),
    ("r.io/v@sha256:abc", ("r.io/v", "", "sha256:abc")),
])
def test_split_image(image: str, parts: tuple[str, str, str]) -> None:
    assert kustomize_lite._split_image(image) == parts
