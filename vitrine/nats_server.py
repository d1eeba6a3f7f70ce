"""Start a real `nats-server` with JetStream (one node or a cluster) for tests and benchmarks.

The binary is Debian's `nats-server` package (`.ci/run` installs it). `nats_server_binary()` is
None where it is absent, so tests can skip saying why. Each node gets its own store directory
and free loopback ports; `stop()` kills what `start()` started, `kill()` is a SIGKILL.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import time
from pathlib import Path

from vitrine.ports import HOST, free_ports
from vitrine.processes import stop_process

START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.02


def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)


@dataclasses.dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    store_dir: Path
    routes: list[int]
    cluster: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed (apt-get install -y nats-server)")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "-js", "-a", HOST, "-p", str(self.port), "-sd", str(self.store_dir),
                "-n", self.name]
        if self.cluster:
            args += ["--cluster_name", self.cluster, "--cluster", f"nats://{HOST}:{self.cluster_port}",
                     "--routes", ",".join(f"nats://{HOST}:{p}" for p in self.routes)]
        log = (self.store_dir.parent / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_port(self.port, self.proc)

    def kill(self) -> None:
        """SIGKILL (a crash), then reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_SECONDS)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, STOP_TIMEOUT_SECONDS, STOP_TIMEOUT_SECONDS)
        self.proc = None


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode} (see its log in the store dir)")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(POLL_SECONDS)  # a child process listening has no event to wait on
    raise RuntimeError(f"nats-server did not listen on {port} within {START_TIMEOUT_SECONDS} s")


def single_node(root: Path) -> NatsNode:
    port, cport = free_ports(2)
    return NatsNode("n1", port, cport, root / "n1", [])


def cluster(root: Path, size: int = 3) -> list[NatsNode]:
    ports = free_ports(2 * size)
    client, routes = ports[:size], ports[size:]
    return [NatsNode(f"n{i + 1}", client[i], routes[i], root / f"n{i + 1}",
                     [p for j, p in enumerate(routes) if j != i], cluster="vitrine")
            for i in range(size)]
