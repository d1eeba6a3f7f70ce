"""Render a kustomization with the real kustomize: `kubectl kustomize` (kubectl ships kustomize).

Where no kubectl is installed the manifest tests skip, saying so; nothing renders the overlays
by a re-implementation.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

RENDER_TIMEOUT_S = 120.0
NO_KUBECTL = ("kubectl is not installed: the manifest tests render the overlays with `kubectl kustomize` "
              "(install kubectl, which ships kustomize, to run them)")


def kubectl() -> str | None:
    return shutil.which("kubectl")


def build(path: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize <path>` renders; skips the calling test without kubectl."""
    command = kubectl()
    if command is None:
        pytest.skip(NO_KUBECTL)
    result = subprocess.run([command, "kustomize", str(path)], capture_output=True, text=True,
                            timeout=RENDER_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    assert objects, f"kubectl kustomize {path} rendered nothing"
    return objects
