"""Static checks of the Dockerfile and .dockerignore (no Docker engine runs where the tests do).

The Dockerfile is parsed into stages and instructions; the build context is computed from
.dockerignore with Docker's matching rules (last matching pattern wins, a pattern matching a
directory matches everything under it, `**` crosses directories).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field

import pytest

from tests.k8s.conftest import OVERLAYS, ROOT, is_vitrine, pod_spec, render

COMPILERS = {"gcc", "g++", "cc", "c++", "clang", "build-essential", "make", "cmake", "python3-dev", "libc6-dev"}
CONTRACT_PORTS = ("50051", "50052", "50053", "50054", "50055")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; line continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base, name))
        elif not stages:
            if keyword == "ARG":
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_includes(patterns: list[str], path: str) -> bool:
    """Whether `path` (relative, '/'-separated) is sent to the builder."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            included = negate
    return included


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_multi_stage_on_python_311_slim(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert final.base.startswith("python:3.11-slim"), final.base
    assert builder.base == final.base, "the venv's interpreter paths must be the same in both stages"


def test_builder_generates_protos_then_installs_the_package(
        dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    runs = " && ".join(stages[0].all("RUN"))
    assert "python tools/gen_protos.py" in runs
    assert runs.index("python tools/gen_protos.py") < runs.index("pip install --no-deps .")
    assert "python -m venv /opt/venv" in runs


def test_dependency_list_command_works(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """The builder's first layer installs pyproject's dependencies: run the same extraction."""
    _, stages = dockerfile
    run = next(r for r in stages[0].all("RUN") if "tomllib" in r)
    code = shlex.split(run)[2]
    assert shlex.split(run)[:2] == ["python", "-c"]
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    requirements = out.stdout.split("\n")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [r for r in requirements if r] == declared


def test_final_stage_is_lean_and_unprivileged(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    for run in final.all("RUN"):
        assert "apt-get install" not in run and "pip install" not in run, run
        assert not COMPILERS & set(re.split(r"[\s;&|]+", run)), run
    copies = final.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    (user,) = final.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (runAsNonRoot can verify it)"
    for name in OVERLAYS:
        for obj in render(name):
            if is_vitrine(obj):
                assert pod_spec(obj)["securityContext"]["runAsUser"] == int(uid), obj["metadata"]["name"]


def test_final_environment(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    env = env_of(stages[-1])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # Numba's on-disk cache must be writable with a read-only root: /tmp is an emptyDir in k8s.
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")
    assert env["MPLCONFIGDIR"].startswith("/tmp/")
    for name in OVERLAYS:
        for obj in render(name):
            if is_vitrine(obj):
                mounts = {m["mountPath"] for m in pod_spec(obj)["containers"][0]["volumeMounts"]}
                assert "/tmp" in mounts, obj["metadata"]["name"]


def test_entry_points(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[0]) == ["vitrine"]
    assert json.loads(final.all("CMD")[0]) == ["serve", "gateway"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vitrine"] == "vitrine.cli:main"
    from vitrine.commands import serve

    for name in OVERLAYS:
        for obj in render(name):
            if is_vitrine(obj) and obj["kind"] != "CronJob":
                args = pod_spec(obj)["containers"][0]["args"]
                assert args[0] == "serve" and args[1] in serve.SERVICES
    exposed = " ".join(final.all("EXPOSE")).split()
    assert all(port in exposed for port in CONTRACT_PORTS)


def test_build_context(dockerfile: tuple[dict[str, str], list[Stage]], ignore_patterns: list[str]) -> None:
    _, stages = dockerfile
    for copy in stages[0].all("COPY"):
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert dockerignore_includes(ignore_patterns, source.rstrip("/") + "/x.py"
                                         if source.endswith("/") else source), source
    for kept in ("pyproject.toml", "README.md", "tools/gen_protos.py", "services/common/server.py",
                 "vitrine/cli.py", "protos/vitrine/v1/common.proto", "vitrine/v1/__init__.py"):
        assert dockerignore_includes(ignore_patterns, kept), kept
    for dropped in (".venv/bin/python", ".git/HEAD", "data/profile/data.mdb", "tests/k8s/test_dockerfile.py",
                    "vitrine/v1/profile_pb2.py", "vitrine/v1/profile_pb2_grpc.py", "vitrine/v1/profile_pb2.pyi",
                    "services/common/__pycache__/server.cpython-311.pyc", "k8s/base/kustomization.yaml",
                    "vitrine.egg-info/PKG-INFO", "benchmarks/out/x.json"):
        assert not dockerignore_includes(ignore_patterns, dropped), dropped


def test_dockerignore_matcher() -> None:
    patterns = ["**", "!src/", "src/gen/*.py", "**/__pycache__"]
    assert dockerignore_includes(patterns, "src/a.py")
    assert not dockerignore_includes(patterns, "other/a.py")
    assert not dockerignore_includes(patterns, "src/gen/a.py")
    assert dockerignore_includes(patterns, "src/gen/a.txt")
    assert not dockerignore_includes(patterns, "src/x/__pycache__/a.pyc")
    assert not dockerignore_includes(["*.md"], "a.md") and dockerignore_includes(["*.md"], "d/a.md")
