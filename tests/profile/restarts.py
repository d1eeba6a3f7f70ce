"""The profile service as a real process for the crash tests: started on a free port, SIGKILLed while
clients write, restarted on the same data dir; `verify` checks what survived."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from vitrine.health import wait_serving_async
from vitrine.ports import free_port
from vitrine.v1 import profile_pb2, profile_pb2_grpc

pb = profile_pb2
ROOT = Path(__file__).resolve().parents[2]
READY_S = 30.0  # bound on a restarted service reaching SERVING


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.profile", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "WARNING", "--purge-interval-seconds", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@contextlib.asynccontextmanager
async def serving_process(
    data_dir: Path,
) -> AsyncIterator[tuple[subprocess.Popen[bytes], profile_pb2_grpc.ProfileServiceStub]]:
    """A profile server on `data_dir` and a free port, SERVING, with a stub to it; killed on the way
    out unless the test already ended it."""
    port = free_port()
    proc = start_server(data_dir, port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving_async(channel, READY_S, process=proc)
            yield proc, profile_pb2_grpc.ProfileServiceStub(channel)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def sigkill_under_load(proc: subprocess.Popen[bytes], workers: list[asyncio.Task[None]], after_s: float,
                             timeout_s: float) -> None:
    """SIGKILL the server `after_s` into the load, then wait for the writers to notice it died."""
    await asyncio.sleep(after_s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    await asyncio.wait_for(asyncio.gather(*workers), timeout_s)


async def verify(stub: profile_pb2_grpc.ProfileServiceStub, acked: set[str]) -> int:
    """Every acknowledged event is in the log exactly once, nothing is in it twice, and every
    profile counted exactly the events of its log. Returns the number of logged events."""
    logged: collections.Counter[str] = collections.Counter()
    per_user: collections.Counter[str] = collections.Counter()
    async for event in stub.ScanEvents(pb.ScanEventsRequest(), timeout=30):
        logged[event.event_id] += 1
        per_user[event.user_id] += 1
    missing = [eid for eid in acked if logged[eid] != 1]
    assert not missing, f"{len(missing)} acknowledged events are not applied exactly once, e.g. {missing[:3]}"
    twice = [eid for eid, n in logged.items() if n > 1]
    assert not twice, f"events logged twice: {twice[:3]}"
    counted = {p.user_id: p.event_count async for p in stub.ScanProfiles(pb.ScanProfilesRequest(), timeout=30)}
    assert counted == dict(per_user), "a profile's event_count differs from its event log"
    return sum(logged.values())
