"""Run the whole suite on one machine: one process per service (and per profile shard).

`vitrine up` uses this; so do the end-to-end tests and the load benchmark. Each child is a
real service process (`python -m services.<name>`), so the suite uses both cores and a
crash in one service is visible as such.

The suite is the list `SERVICES` of `ServiceSpec`s, started in list order and stopped gateway
first. A service is added with one entry: its name, module, default port and the flags it
needs beyond the common ones (host, port, token, metrics port).

A child that dies while the suite runs is restarted with exponential backoff, as process
supervisors do (`Suite.poll()`); after `MAX_RESTARTS` crashes within `RESTART_WINDOW_SECONDS`
the supervisor gives up on it, says so, and leaves the rest running (the gateway's fallbacks
cover a missing backend).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vitrine.health import wait_serving  # the one health-wait helper

# Extra profile shards listen next to the first: 50052, 50062, 50072, ...
SHARD_PORT_STEP = 10
READY_TIMEOUT_SECONDS = 120.0
STOP_GRACE_SECONDS = 10.0
# Restart policy (like systemd's RestartSec with StartLimitBurst/StartLimitIntervalSec).
RESTART_BACKOFF_INITIAL_SECONDS = 0.5
RESTART_BACKOFF_MAX_SECONDS = 10.0
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 120.0
# A restarted child that does not report SERVING within this long is killed and counted as a crash.
RESTART_READY_TIMEOUT_SECONDS = 120.0
HEALTH_PROBE_TIMEOUT_SECONDS = 0.5
# Stopped first on shutdown, so no new work reaches the backends while they drain.
STOP_FIRST = ("gateway",)


@dataclasses.dataclass(frozen=True)
class SuiteLayout:
    data_dir: Path
    ports: dict[str, int]
    profile_shards: int = 1
    auth_token: str = ""
    host: str = "127.0.0.1"
    metrics_base_port: int = -1  # -1: no /metrics endpoints
    # Scale-out mode (issue 17): the profile shards' event log in NATS JetStream ("" = embedded).
    event_log: str = ""
    event_log_partitions: int = 16

    def scale_out_flags(self) -> list[str]:
        if not self.event_log:
            return []
        return ["--event-log", self.event_log, "--event-log-partitions", str(self.event_log_partitions)]

    def profile_ports(self) -> list[int]:
        return [self.ports["profile"] + i * SHARD_PORT_STEP for i in range(self.profile_shards)]

    def profile_addresses(self) -> list[str]:
        return [f"{self.host}:{port}" for port in self.profile_ports()]

    def address(self, name: str) -> str:
        return f"{self.host}:{self.ports[name]}"

    def profile_data_dir(self, shard: int) -> Path:
        # One shard keeps the plain layout (<data_dir>/profile); several get a root each.
        return self.data_dir if self.profile_shards == 1 else self.data_dir / f"shard-{shard}"


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    """One service of the suite. `flags(layout)` gives the flags beyond host/port/token/metrics."""

    name: str
    module: str  # run as `python -m <module>`
    default_port: int
    flags: Callable[[SuiteLayout], list[str]]
    health: str = "grpc"  # "grpc": grpc.health.v1 Check; "http": GET http://address<health_path> answers 200
    health_path: str = "/healthz"
    sharded: bool = False  # one process per profile shard (ports base + i * SHARD_PORT_STEP)


def _profiles(layout: SuiteLayout) -> str:
    return ",".join(layout.profile_addresses())


def _backend_flags(layout: SuiteLayout) -> list[str]:
    return ["--data-dir", str(layout.data_dir), "--profile-addresses", _profiles(layout)]


def _gateway_flags(layout: SuiteLayout) -> list[str]:
    return ["--profile-addresses", _profiles(layout), *layout.scale_out_flags(),
            "--segmentation-address", layout.address("segmentation"),
            "--recommendation-address", layout.address("recommendation")]


def _console_flags(layout: SuiteLayout) -> list[str]:
    journeys = layout.address("journeys") if "journeys" in layout.ports else f"{layout.host}:50055"
    return ["--data-dir", str(layout.data_dir), "--gateway-address", layout.address("gateway"),
            "--segmentation-address", layout.address("segmentation"),
            "--recommendation-address", layout.address("recommendation"), "--journeys-address", journeys]


def _journeys_flags(layout: SuiteLayout) -> list[str]:
    return [*_backend_flags(layout), "--segmentation-address", layout.address("segmentation"),
            "--recommendation-address", layout.address("recommendation")]


# Start order: profile shards first, gateway after its backends. Add a service with one entry.
SERVICES: list[ServiceSpec] = [
    ServiceSpec("profile", "services.profile", 50052, lambda layout: [], sharded=True),
    ServiceSpec("segmentation", "services.segmentation", 50053, _backend_flags),
    ServiceSpec("recommendation", "services.recommendation", 50054, _backend_flags),
    ServiceSpec("journeys", "services.journeys", 50055, _journeys_flags),
    ServiceSpec("gateway", "services.gateway", 50051, _gateway_flags),
    ServiceSpec("console", "services.console", 8080, _console_flags, health="http"),
]
DEFAULT_PORTS = {spec.name: spec.default_port for spec in sorted(SERVICES, key=lambda s: s.default_port)}


def _all_in_one_flags(layout: SuiteLayout) -> list[str]:
    return ["--data-dir", str(layout.data_dir), "--profile-port", str(layout.profile_ports()[0]),
            "--segmentation-port", str(layout.ports["segmentation"]),
            "--recommendation-port", str(layout.ports["recommendation"])]


# The one-machine default (issue #16, measured in benchmarks/README.md): profile, segmentation,
# recommendation and the gateway in one process (services.gateway.all_in_one: each service on its own
# port with its own API, the gateway calling them in-process), journeys and the console in their own.
# It serves one profile shard; SERVICES (one process per service) is the other mode.
SHARED_SERVICES: list[ServiceSpec] = [
    ServiceSpec("gateway", "services.gateway.all_in_one", 50051, _all_in_one_flags),
    *(spec for spec in SERVICES if spec.name in ("journeys", "console")),
]


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    SERVING = "serving"
    BACKOFF = "restarting"  # crashed; waiting for its backoff before the next start
    FAILED = "failed"  # crashed too often: given up
    STOPPED = "stopped"


@dataclasses.dataclass
class Child:
    name: str
    address: str
    argv: list[str]
    log_path: Path
    health: str = "grpc"
    health_path: str = "/healthz"
    process: subprocess.Popen[bytes] | None = None
    state: State = State.NEW
    restarts: int = 0
    crashes: list[float] = dataclasses.field(default_factory=list)  # monotonic times, within the window
    restart_at: float = 0.0
    started_at: float = 0.0
    last_exit: int | None = None
    # kill -> SERVING again, seconds, of the last restart (None before the first).
    last_recovery_seconds: float | None = None
    crashed_at: float = 0.0

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def plan(layout: SuiteLayout, services: Sequence[ServiceSpec] | None = None) -> list[Child]:
    """The processes to start, in `SERVICES` order (profile shards first, gateway after its backends)."""
    logs = layout.data_dir / "logs"
    python = [sys.executable, "-m"]
    common = ["--host", layout.host]
    if layout.auth_token:
        common += ["--auth-token", layout.auth_token]
    metrics = iter(range(layout.metrics_base_port, layout.metrics_base_port + 100))

    def metrics_flag() -> list[str]:
        return ["--metrics-port", str(next(metrics))] if layout.metrics_base_port >= 0 else []

    children = []
    for spec in SERVICES if services is None else services:
        if spec.sharded:
            for shard, port in enumerate(layout.profile_ports()):
                name = spec.name if layout.profile_shards == 1 else f"{spec.name}-{shard}"
                children.append(Child(name, f"{layout.host}:{port}", [
                    *python, spec.module, *common, "--port", str(port),
                    "--data-dir", str(layout.profile_data_dir(shard)), *spec.flags(layout), *metrics_flag(),
                    *(["--shard-index", str(shard), "--shard-count", str(layout.profile_shards),
                       *layout.scale_out_flags()] if layout.event_log else []),
                ], logs / f"{name}.log", spec.health, spec.health_path))
            continue
        port = layout.ports.get(spec.name, spec.default_port)
        children.append(Child(spec.name, f"{layout.host}:{port}", [
            *python, spec.module, *common, "--port", str(port), *spec.flags(layout), *metrics_flag(),
        ], logs / f"{spec.name}.log", spec.health, spec.health_path))
    return children


def probe(child: Child, timeout: float = HEALTH_PROBE_TIMEOUT_SECONDS) -> bool:
    """One health check of `child`: True when it reports SERVING."""
    if child.health == "http":
        try:
            with urllib.request.urlopen(f"http://{child.address}{child.health_path}", timeout=timeout) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False
    with grpc.insecure_channel(child.address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _wait_child(child: Child, deadline: float) -> None:
    if child.health == "grpc":
        wait_serving(child.address, deadline, child.process)
        return
    while not probe(child):
        if child.process is not None and child.process.poll() is not None:
            raise RuntimeError(f"{child.address}: process exited with code {child.process.returncode}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{child.address} did not report SERVING in time")
        time.sleep(0.1)


@dataclasses.dataclass(frozen=True)
class Event:
    """Something the supervisor did, for `vitrine up` to print."""

    child: str
    message: str
    error: bool = False


class Suite:
    """Starts the planned children, waits until all are SERVING, restarts crashed ones, stops them."""

    def __init__(self, layout: SuiteLayout, env: dict[str, str] | None = None, *,
                 services: Sequence[ServiceSpec] | None = None,
                 max_restarts: int = MAX_RESTARTS, restart_window: float = RESTART_WINDOW_SECONDS,
                 backoff_initial: float = RESTART_BACKOFF_INITIAL_SECONDS,
                 backoff_max: float = RESTART_BACKOFF_MAX_SECONDS) -> None:
        self.layout = layout
        self.children = plan(layout, services)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._stopping = False

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def _spawn(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(child.log_path, "ab") as log_file:
            child.process = subprocess.Popen(
                child.argv, stdout=log_file, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
            )
        child.state = State.STARTING
        child.started_at = time.monotonic()

    def start(self, ready_timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self._stopping = False
        for child in self.children:
            self._spawn(child)
        deadline = time.monotonic() + ready_timeout
        try:
            for child in self.children:
                _wait_child(child, deadline)
                child.state = State.SERVING
        except BaseException:
            self.stop()
            raise

    def dead_children(self) -> list[Child]:
        return [c for c in self.children if c.process is not None and c.process.poll() is not None]

    def poll(self, now: float | None = None) -> list[Event]:
        """One round of supervision: notice crashes, restart due children, see restarted ones serve."""
        if self._stopping:
            return []
        now = time.monotonic() if now is None else now
        events: list[Event] = []
        for child in self.children:
            if child.state in (State.SERVING, State.STARTING) and child.process is not None:
                code = child.process.poll()
                if code is not None:
                    events.append(self._crashed(child, code, now))
                    continue
            if child.state is State.STARTING and child.restarts:
                if probe(child):
                    child.state = State.SERVING
                    child.last_recovery_seconds = time.monotonic() - child.crashed_at
                    events.append(Event(child.name, f"SERVING again after restart {child.restarts} "
                                                    f"({child.last_recovery_seconds:.1f}s after the crash)"))
                elif now - child.started_at > RESTART_READY_TIMEOUT_SECONDS:
                    assert child.process is not None
                    child.process.kill()
                    child.process.wait()
                    events.append(self._crashed(child, child.process.returncode, now,
                                                why="did not report SERVING in time"))
            elif child.state is State.BACKOFF and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
                events.append(Event(child.name, f"restarting (restart {child.restarts})"))
        return events

    def _crashed(self, child: Child, code: int, now: float, why: str = "") -> Event:
        child.last_exit = code
        child.crashed_at = time.monotonic()
        child.crashes = [t for t in child.crashes if now - t < self.restart_window] + [now]
        reason = why or f"exited with code {code}"
        if len(child.crashes) > self.max_restarts:
            child.state = State.FAILED
            return Event(child.name, f"{reason}; {len(child.crashes)} crashes within "
                                     f"{self.restart_window:.0f}s: giving up on it (see {child.log_path}). "
                                     "The rest of the suite keeps running; restart Vitrine after fixing the cause.",
                         error=True)
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (len(child.crashes) - 1))
        child.state = State.BACKOFF
        child.restart_at = now + delay
        return Event(child.name, f"{reason}; restarting in {delay:.1f}s "
                                 f"(crash {len(child.crashes)} of {self.max_restarts + 1} allowed "
                                 f"in {self.restart_window:.0f}s)", error=True)

    def stop_order(self) -> list[Child]:
        first = [c for c in self.children if c.name in STOP_FIRST]
        return first + [c for c in reversed(self.children) if c.name not in STOP_FIRST]

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every child, gateway first, then the rest in reverse start order; SIGKILL after `grace`."""
        self._stopping = True
        order = self.stop_order()
        for child in order:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in order:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.state = State.STOPPED

    def __enter__(self) -> Suite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def status_table(children: Sequence[Child]) -> str:
    """A fixed-width table of the children: name, address, pid, health, restarts."""
    rows = [("SERVICE", "ADDRESS", "PID", "HEALTH", "RESTARTS")]
    for child in children:
        rows.append((child.name, child.address, str(child.pid or "-"), child.state.value.upper(),
                     str(child.restarts)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def is_empty_data_dir(path: Path, ignore: Sequence[str] = ("logs",)) -> bool:
    return not path.exists() or not any(p for p in path.iterdir() if p.name not in ignore)
