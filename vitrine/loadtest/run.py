"""Orchestrates one load run: echo ceiling, then the gateway, each with the generator in
its own process; writes results.json, results.md and latency_vs_load.png."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from vitrine.loadtest import report
from vitrine.loadtest.cpu import CpuSampler, annotate
from vitrine.ports import free_port
from vitrine.v1 import profile_pb2, profile_pb2_grpc

# Results go next to the benchmark write-ups when run from a checkout (`make loadtest`).
OUT_DIR = Path("benchmarks/loadtest")
DEFAULT_STEPS = (250.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0)
DEFAULT_ECHO_STEPS = (1000.0, 2000.0, 3000.0, 4000.0, 6000.0)
USER_SAMPLE = 50_000          # shopper ids the generator draws from
USER_SCANS = 25               # ScanProfiles calls from random start points (spread over the id space)
UNKNOWN_SHARE = 0.05          # Personalize/Track for ids the store has never seen


@dataclasses.dataclass
class Options:
    gateway: str
    profile_addresses: Sequence[str]
    steps: Sequence[float] = DEFAULT_STEPS
    echo_steps: Sequence[float] = DEFAULT_ECHO_STEPS
    step_seconds: float = 10.0
    products: int = 100_000
    shoppers: int = 1_000_000
    out_dir: Path = OUT_DIR
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    pids: dict[str, int] = dataclasses.field(default_factory=dict)  # service processes to account CPU for


def child_env() -> dict[str, str]:
    """The environment of the generator and echo processes (they import the installed package)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def echo_server(sampler: CpuSampler | None = None) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "vitrine.loadtest.echo", "--port", str(port)],
                               env=child_env(), stdout=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    if sampler is not None:
        sampler.add("echo", process.pid)
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
        yield address
    finally:
        process.terminate()
        process.wait(10)


def sample_users(profile_addresses: Sequence[str], shoppers: int, seed: int = 11) -> list[str]:
    """Real shopper ids of the loaded store, spread over its id space, plus a few unknown ones."""
    rng = random.Random(seed)

    async def scan() -> list[str]:
        ids: set[str] = set()
        per_scan = max(USER_SAMPLE // (USER_SCANS * len(profile_addresses)), 1)
        width = max(6, len(str(max(shoppers - 1, 0))))
        for address in profile_addresses:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = profile_pb2_grpc.ProfileServiceStub(channel)
                for scan_no in range(USER_SCANS):
                    # Demo ids are "c<index>" (customers) and "v<index>" (visitors); the first scan
                    # starts at the beginning so that any store yields ids.
                    start = "" if scan_no == 0 else rng.choice("cv") + f"{rng.randrange(shoppers):0{width}d}"
                    request = profile_pb2.ScanProfilesRequest(limit=per_scan, start_after=start)
                    async for profile in stub.ScanProfiles(request, timeout=60):
                        ids.add(profile.user_id)
        return sorted(ids)

    known = asyncio.run(scan())
    unknown = [f"new-{i}" for i in range(int(len(known) * UNKNOWN_SHARE))]
    users = known + unknown
    rng.shuffle(users)
    return users


def run_generator(target: str, mode: str, steps: Sequence[float], step_seconds: float,
                  extra: Sequence[str] = (), sampler: CpuSampler | None = None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "vitrine.loadtest.generator", "--target", target, "--mode", mode,
            "--steps", ",".join(f"{s:g}" for s in steps), "--step-seconds", str(step_seconds), *extra]
    budget = (len(steps) + 1) * (step_seconds + 10) + 60  # bounded in time whatever happens
    process = subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    if sampler is not None:
        sampler.add("generator", process.pid)
    try:
        stdout, stderr = process.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    sys.stderr.write(stderr)
    if process.returncode != 0:
        raise RuntimeError(f"generator ({mode}) failed with code {process.returncode}")
    return json.loads(stdout.strip().splitlines()[-1])


def _loadavg() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def run(options: Options) -> dict[str, Any]:
    options.out_dir.mkdir(parents=True, exist_ok=True)
    load_before = _loadavg()
    users = sample_users(options.profile_addresses, options.shoppers)
    if not users:
        raise RuntimeError("the profile service holds no shoppers: load a store first (or use --start-suite)")
    users_file = options.out_dir / "users.txt"
    users_file.write_text("\n".join(users))
    print(f"{len(users)} shopper ids sampled", file=sys.stderr)
    with CpuSampler({}) as sampler, echo_server(sampler) as echo_address:
        echo = run_generator(echo_address, "echo", options.echo_steps, options.step_seconds, sampler=sampler)
    annotate(echo, sampler)
    width = max(6, len(str(max(options.products - 1, 0))))
    with CpuSampler(options.pids) as sampler:
        vitrine = run_generator(options.gateway, "vitrine", options.steps, options.step_seconds,
                                ["--users", str(users_file), "--products", str(options.products),
                                 "--product-width", str(width)], sampler=sampler)
    annotate(vitrine, sampler)
    users_file.unlink(missing_ok=True)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
                       f"grpcio {grpc.__version__}",
            # Others' work on the same cores shows here: read the figures against it.
            "load": f"1-min load average {load_before} before the run, {_loadavg()} after",
            **options.meta}
    results = {"meta": meta, "vitrine": vitrine, "echo": echo, "summary": report.summary(vitrine, echo)}
    (options.out_dir / "results.json").write_text(json.dumps(results, indent=1))
    (options.out_dir / "results.md").write_text(report.markdown(vitrine, echo, meta))
    report.plot(vitrine, echo, options.out_dir / "latency_vs_load.png")
    return results
