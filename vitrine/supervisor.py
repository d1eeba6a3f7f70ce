"""Run the whole suite on one machine: one process per service (and per profile shard).

`vitrine up` uses this; so do the end-to-end tests and the load benchmark. Each child is a
real service process (`python -m services.<name>`), so the suite uses both cores and a
crash in one service is visible as such.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORTS = {"gateway": 50051, "profile": 50052, "segmentation": 50053, "recommendation": 50054}
# Extra profile shards listen next to the first: 50052, 50062, 50072, ...
SHARD_PORT_STEP = 10
READY_TIMEOUT_SECONDS = 120.0
STOP_GRACE_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class SuiteLayout:
    data_dir: Path
    ports: dict[str, int]
    profile_shards: int = 1
    auth_token: str = ""
    host: str = "127.0.0.1"
    metrics_base_port: int = -1  # -1: no /metrics endpoints

    def profile_ports(self) -> list[int]:
        return [self.ports["profile"] + i * SHARD_PORT_STEP for i in range(self.profile_shards)]

    def profile_addresses(self) -> list[str]:
        return [f"{self.host}:{port}" for port in self.profile_ports()]

    def address(self, name: str) -> str:
        return f"{self.host}:{self.ports[name]}"

    def profile_data_dir(self, shard: int) -> Path:
        # One shard keeps the plain layout (<data_dir>/profile); several get a root each.
        return self.data_dir if self.profile_shards == 1 else self.data_dir / f"shard-{shard}"


@dataclasses.dataclass
class Child:
    name: str
    address: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None


def plan(layout: SuiteLayout) -> list[Child]:
    """The processes to start, profile shards first, gateway last."""
    logs = layout.data_dir / "logs"
    python = [sys.executable, "-m"]
    common = ["--host", layout.host]
    if layout.auth_token:
        common += ["--auth-token", layout.auth_token]
    profiles = ",".join(layout.profile_addresses())
    metrics = iter(range(layout.metrics_base_port, layout.metrics_base_port + 100))

    def metrics_flag() -> list[str]:
        return ["--metrics-port", str(next(metrics))] if layout.metrics_base_port >= 0 else []

    children = []
    for shard, port in enumerate(layout.profile_ports()):
        name = "profile" if layout.profile_shards == 1 else f"profile-{shard}"
        children.append(Child(name, f"{layout.host}:{port}", [
            *python, "services.profile", *common, "--port", str(port),
            "--data-dir", str(layout.profile_data_dir(shard)), *metrics_flag(),
        ], logs / f"{name}.log"))
    for name in ("segmentation", "recommendation"):
        children.append(Child(name, layout.address(name), [
            *python, f"services.{name}", *common, "--port", str(layout.ports[name]),
            "--data-dir", str(layout.data_dir), "--profile-addresses", profiles, *metrics_flag(),
        ], logs / f"{name}.log"))
    children.append(Child("gateway", layout.address("gateway"), [
        *python, "services.gateway", *common, "--port", str(layout.ports["gateway"]),
        "--profile-addresses", profiles,
        "--segmentation-address", layout.address("segmentation"),
        "--recommendation-address", layout.address("recommendation"), *metrics_flag(),
    ], logs / "gateway.log"))
    return children


def wait_serving(address: str, deadline: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until `address` reports SERVING; raise if the process dies or time runs out."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{address}: process exited with code {process.returncode}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{address} did not report SERVING in time")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=min(1.0, remaining))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)


class Suite:
    """Starts the planned children, waits until all are SERVING, stops them in reverse order."""

    def __init__(self, layout: SuiteLayout, env: dict[str, str] | None = None) -> None:
        self.layout = layout
        self.children = plan(layout)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}

    def start(self, ready_timeout: float = READY_TIMEOUT_SECONDS) -> None:
        for child in self.children:
            child.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(child.log_path, "ab") as log_file:
                child.process = subprocess.Popen(
                    child.argv, stdout=log_file, stderr=subprocess.STDOUT, env=self.env,
                    start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
                )
        deadline = time.monotonic() + ready_timeout
        try:
            for child in self.children:
                wait_serving(child.address, deadline, child.process)
        except BaseException:
            self.stop()
            raise

    def dead_children(self) -> list[Child]:
        return [c for c in self.children if c.process is not None and c.process.poll() is not None]

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        # Gateway first, so no new work reaches the backends while they drain.
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()

    def __enter__(self) -> Suite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def is_empty_data_dir(path: Path, ignore: Sequence[str] = ("logs",)) -> bool:
    return not path.exists() or not any(p for p in path.iterdir() if p.name not in ignore)
