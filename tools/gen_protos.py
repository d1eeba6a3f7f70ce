"""Generate Python code and typed .pyi stubs from protos/ into the vitrine package.

The stubs come from mypy-protobuf (messages, and the gRPC stubs and servicers with their
grpc.aio variants), so mypy checks every call on a generated stub.

The proto tree mirrors the Python package (protos/vitrine/v1/x.proto ->
vitrine/v1/x_pb2.py), so the generated `from vitrine.v1 import ...` imports
work as they are and need no rewriting.

    python tools/gen_protos.py            # write into the repository
    python tools/gen_protos.py --out DIR  # write elsewhere (staleness test)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def _plugin(name: str) -> str | None:
    """The protoc plugin `name` installed with mypy-protobuf, next to this interpreter or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _stub_args(out_dir: Path) -> list[str]:
    """mypy-protobuf's typed stubs (a dev dependency); without it (the image's builder stage, which
    installs only what runs) protoc's own message stubs, which no type check reads there."""
    mypy, mypy_grpc = _plugin("protoc-gen-mypy"), _plugin("protoc-gen-mypy_grpc")
    if mypy is None or mypy_grpc is None:
        print("mypy-protobuf not installed: protoc's own .pyi stubs (no typed gRPC stubs)", file=sys.stderr)
        return [f"--pyi_out={out_dir}"]
    return [f"--plugin=protoc-gen-mypy={mypy}", f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}",
            f"--mypy_out=quiet:{out_dir}", f"--mypy_grpc_out=quiet:{out_dir}"]


def generate(out_dir: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc  # imported late: only the build step needs it

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *_stub_args(out_dir),
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    # Every generated folder is a regular package.
    for proto in files:
        package_dir = out_dir / Path(proto).parent
        while package_dir != out_dir:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: repository root)")
    args = parser.parse_args(argv)
    generate(args.out)
    print(f"generated {len(proto_files())} proto files into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
