"""A small, strict kustomize renderer for the subset of kustomize that k8s/ uses.

Why: `make test` runs on a machine with Python and pip only, and no PyPI package ships a
kustomize that reads kustomization.yaml (the `kustomize` package on PyPI is an unrelated
Python DSL). So the tests render the overlays with this module, and cross-check it against a
real `kubectl kustomize` / `kustomize build` wherever one is installed
(tests/k8s/test_manifests.py::test_renderer_agrees_with_real_kustomize).

Supported, with kustomize's semantics:
  resources (files, multi-document YAML, and directories holding a kustomization),
  components (directories holding a `kind: Component`, applied after the resources),
  namespace (sets metadata.namespace on namespaced objects, and renames Namespace objects),
  labels (pairs; includeSelectors and includeTemplates must be false, their defaults),
  patches (strategic-merge patches from `path` or inline `patch`, matched by kind and name;
           lists merge by the Kubernetes patch-merge key for the fields listed in MERGE_KEYS,
           every other list is replaced),
  replicas, images (newName, newTag, digest),
  configMapGenerator / secretGenerator (files and literals) with
  generatorOptions.disableNameSuffixHash: true.

Anything else (JSON 6902 patches, `$patch` directives, name-suffix hashes that
would need reference rewriting, ...) raises `Unsupported` rather than render something
different from kustomize.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

SUPPORTED_KEYS = {
    "apiVersion", "kind", "namespace", "resources", "labels", "patches", "replicas", "images",
    "configMapGenerator", "secretGenerator", "generatorOptions", "components",
}

# Cluster-scoped kinds: the namespace transformer leaves them alone (Namespace is renamed).
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "CustomResourceDefinition", "PriorityClass", "IngressClass", "RuntimeClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
}

# Strategic-merge keys of the list fields our patches touch (from the Kubernetes OpenAPI
# `x-kubernetes-patch-merge-key`). Lists not named here are replaced whole, as kustomize does
# for atomic lists (args, accessModes, volumeClaimTemplates, ...).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "tolerations": "key",
    "topologySpreadConstraints": "topologyKey",
}

REPLICATED_KINDS = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}


class Unsupported(Exception):
    """The kustomization uses a feature this renderer does not implement."""


def _load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def _kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no kustomization file in {directory}")


def _id(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    group = obj.get("apiVersion", "").rpartition("/")[0]
    return (group, obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def _inside(root: Path, path: Path) -> Path:
    resolved = path.resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise Unsupported(f"{path} is outside {root} (kustomize's load restrictor refuses it)")
    return resolved


# --- strategic merge -------------------------------------------------------------------------

def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Merge `patch` into `base` like a strategic-merge patch (subset: see module docstring)."""
    if isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise Unsupported(f"patch directive in {field or 'document'}: {sorted(patch)}")
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list):
        key = MERGE_KEYS.get(field)
        if key is None or not isinstance(base, list) or not all(isinstance(i, dict) for i in patch):
            return copy.deepcopy(patch)
        # kustomize (kyaml) orders the result as the patch's items first (each merged into its
        # counterpart), then the base's items the patch does not mention, in their order.
        by_key = {item.get(key): item for item in base if isinstance(item, dict)}
        merged_list = []
        for item in patch:
            if key not in item:
                raise Unsupported(f"list {field}: an item without its merge key {key!r}")
            existing = by_key.get(item[key])
            merged_list.append(strategic_merge(existing, item, field) if existing is not None
                               else copy.deepcopy(item))
        mentioned = {item[key] for item in patch}
        merged_list.extend(copy.deepcopy(item) for item in base
                           if not (isinstance(item, dict) and item.get(key) in mentioned))
        return merged_list
    return copy.deepcopy(patch)


# --- transformers ----------------------------------------------------------------------------

def _apply_patches(objects: list[dict[str, Any]], patches: list[dict[str, Any]], root: Path) -> None:
    for entry in patches:
        unknown = set(entry) - {"path", "patch", "target"}
        if unknown:
            raise Unsupported(f"patches entry keys {sorted(unknown)}")
        if "path" in entry:
            docs = _load_docs(_inside(root, root / entry["path"]))
        else:
            docs = [doc for doc in yaml.safe_load_all(entry["patch"]) if doc]
        for doc in docs:
            if isinstance(doc, list) or "op" in doc:
                raise Unsupported("JSON 6902 patches")
            target = entry.get("target") or {}
            kind = target.get("kind", doc.get("kind"))
            name = target.get("name", doc.get("metadata", {}).get("name"))
            if set(target) - {"kind", "name"}:
                raise Unsupported(f"patch target fields {sorted(target)}")
            body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
            body["metadata"] = {k: v for k, v in doc.get("metadata", {}).items() if k != "name"}
            if not body["metadata"]:
                del body["metadata"]
            matches = [o for o in objects if o.get("kind") == kind and o["metadata"].get("name") == name]
            if not matches:
                raise ValueError(f"patch {entry.get('path', '<inline>')}: no {kind}/{name} to patch")
            for obj in matches:
                merged = strategic_merge(obj, body)
                obj.clear()
                obj.update(merged)


def _apply_namespace(objects: list[dict[str, Any]], namespace: str) -> None:
    for obj in objects:
        if obj.get("kind") == "Namespace":
            obj["metadata"]["name"] = namespace
        elif obj.get("kind") not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace


def _apply_labels(objects: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise Unsupported("labels with includeSelectors or includeTemplates")
        if set(entry) - {"pairs", "includeSelectors", "includeTemplates"}:
            raise Unsupported(f"labels entry keys {sorted(entry)}")
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry.get("pairs", {}))


def _apply_replicas(objects: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        matches = [o for o in objects if o["metadata"].get("name") == entry["name"]
                   and o.get("kind") in REPLICATED_KINDS]
        if not matches:
            raise ValueError(f"replicas: no workload named {entry['name']}")
        for obj in matches:
            obj.setdefault("spec", {})["replicas"] = int(entry["count"])


def _split_image(image: str) -> tuple[str, str, str]:
    """'repo/name:tag@sha256:..' -> (name, tag, digest)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, digest


def _containers(node: Any) -> Iterable[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _apply_images(objects: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        if set(entry) - {"name", "newName", "newTag", "digest"}:
            raise Unsupported(f"images entry keys {sorted(entry)}")
        for obj in objects:
            for container in _containers(obj):
                name, tag, digest = _split_image(container.get("image", ""))
                if name != entry["name"]:
                    continue
                name = entry.get("newName", name)
                if "digest" in entry:
                    tag, digest = "", entry["digest"]
                elif "newTag" in entry:
                    tag, digest = str(entry["newTag"]), ""
                image = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
                container["image"] = image


# --- generators ------------------------------------------------------------------------------

def _generated(kind: str, entry: dict[str, Any], root: Path, options: dict[str, Any]) -> dict[str, Any]:
    if set(entry) - {"name", "files", "literals", "type", "behavior"}:
        raise Unsupported(f"{kind} generator keys {sorted(entry)}")
    if entry.get("behavior", "create") != "create":
        raise Unsupported("generator behavior other than create")
    if not options.get("disableNameSuffixHash"):
        raise Unsupported("name-suffix hashes (the renderer does not rewrite references)")
    data: dict[str, str] = {}
    for literal in entry.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for spec in entry.get("files", []):
        key, sep, rel = spec.partition("=")
        if not sep:
            key, rel = Path(spec).name, spec
        data[key] = _inside(root, root / rel).read_text(encoding="utf-8")
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": entry["name"]}}
    if kind == "Secret":
        obj["type"] = entry.get("type", "Opaque")
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    return obj


# --- build -----------------------------------------------------------------------------------

def build(directory: str | Path) -> list[dict[str, Any]]:
    """Render the kustomization in `directory`: the list of objects `kustomize build` emits."""
    return _build(Path(directory), [], component=False)


def _build(root: Path, inherited: list[dict[str, Any]], *, component: bool) -> list[dict[str, Any]]:
    """Objects of the kustomization (or, with `component`, the Component) at `root`.

    A Component works on the objects accumulated by the kustomization that lists it
    (`inherited`): its resources are added to them and its patches apply to all of them.
    """
    spec = yaml.safe_load(_kustomization_file(root).read_text(encoding="utf-8")) or {}
    unknown = set(spec) - SUPPORTED_KEYS
    if unknown:
        raise Unsupported(f"{root}: kustomization fields {sorted(unknown)}")
    kind = spec.get("kind", "Kustomization")
    if (kind == "Component") != component:
        raise ValueError(f"{root}: a {kind} where a {'Component' if component else 'Kustomization'} belongs")

    objects: list[dict[str, Any]] = list(inherited)
    for resource in spec.get("resources", []):
        path = root / resource
        if path.is_dir():
            objects.extend(build(path))
        else:
            objects.extend(_load_docs(_inside(root, path)))
    # kustomize applies components after the resources, before this kustomization's own
    # generators and transformers.
    for entry in spec.get("components", []):
        objects = _build(root / entry, objects, component=True)
    options = spec.get("generatorOptions", {})
    if set(options) - {"disableNameSuffixHash"}:
        raise Unsupported(f"generatorOptions {sorted(options)}")
    for entry in spec.get("configMapGenerator", []):
        objects.append(_generated("ConfigMap", entry, root, options))
    for entry in spec.get("secretGenerator", []):
        objects.append(_generated("Secret", entry, root, options))

    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        if _id(obj) in seen:
            raise ValueError(f"{root}: {obj['kind']}/{obj['metadata'].get('name')} is defined twice")
        seen.add(_id(obj))

    objects = [copy.deepcopy(o) for o in objects]
    _apply_patches(objects, spec.get("patches", []), root)
    if spec.get("namespace"):
        _apply_namespace(objects, spec["namespace"])
    _apply_labels(objects, spec.get("labels", []))
    _apply_replicas(objects, spec.get("replicas", []))
    _apply_images(objects, spec.get("images", []))
    return objects


def object_id(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}"


def main(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python tests/k8s/kustomize_lite.py DIR", file=sys.stderr)
        return 2
    print(yaml.safe_dump_all(build(args[0]), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
