"""Root conftest: make sure the generated protobuf code exists and is current.

`make test` generates it first; this guard covers a bare `pytest` run after a proto
change, so nobody tests against stale generated code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _generated_is_stale() -> bool:
    protos = list((ROOT / "protos").rglob("*.proto"))
    outputs = [ROOT / "vitrine" / p.relative_to(ROOT / "protos" / "vitrine").with_name(p.stem + "_pb2.py")
               for p in protos]
    if not all(o.exists() for o in outputs):
        return True
    newest_proto = max(p.stat().st_mtime for p in protos)
    return any(o.stat().st_mtime < newest_proto for o in outputs)


if _generated_is_stale():
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_protos.py")], check=True)
