"""Wait until a service reports SERVING on grpc.health.v1: the one helper the CLI, tests and benchmarks use.

It follows the server's health `Watch` stream (with `wait_for_ready`, so a port that is not listening
yet is waited for by gRPC itself) instead of polling `Check` in a sleep loop: it returns the moment the
service turns SERVING. Each attempt is bounded so a child process that died is noticed.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# One Watch attempt lasts at most this long before the process and the deadline are checked again.
ATTEMPT_SECONDS = 1.0
# After an attempt that failed at once (e.g. the server is shutting down), wait this long before the next.
RETRY_PAUSE_SECONDS = 0.05

SERVING = health_pb2.HealthCheckResponse.SERVING


def _status_name(status: int) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


def _time_left(deadline: float, process: subprocess.Popen[bytes] | None, where: str, last: str) -> float:
    """Seconds left for the next attempt. Raises RuntimeError when `process` has exited and
    TimeoutError (naming the last status seen) when the deadline has passed."""
    if process is not None and process.poll() is not None:
        raise RuntimeError(f"{where}: process exited with code {process.returncode} before SERVING")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"{where} did not report SERVING in time ({last})")
    return remaining


def wait_serving(address: str, deadline: float, process: subprocess.Popen[bytes] | None = None, *,
                 service: str = "") -> None:
    """Block until `address` reports `service` ("" = the whole server) SERVING.

    `deadline` is a `time.monotonic()` value. Raises RuntimeError when `process` exits first and
    TimeoutError (naming the last status seen) when the deadline passes.
    """
    last = "no answer"
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = _time_left(deadline, process, address, last)
            started = time.monotonic()
            try:
                for reply in stub.Watch(health_pb2.HealthCheckRequest(service=service),
                                        timeout=min(ATTEMPT_SECONDS, remaining), wait_for_ready=True):
                    if reply.status == SERVING:
                        return
                    last = _status_name(reply.status)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    raise RuntimeError(f"{address} serves no grpc.health.v1 service") from err
                if code != grpc.StatusCode.DEADLINE_EXCEEDED:
                    last = code.name if code is not None else str(err)
            if time.monotonic() - started < RETRY_PAUSE_SECONDS:
                time.sleep(RETRY_PAUSE_SECONDS)  # the stream ended at once: do not spin


async def wait_serving_async(channel: grpc.aio.Channel, seconds: float, *, service: str = "",
                             process: subprocess.Popen[bytes] | None = None) -> None:
    """`wait_serving` for asyncio code, on a channel the caller already holds."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + seconds
    last = "no answer"
    while True:
        remaining = _time_left(deadline, process, f"the server (waited up to {seconds:g}s)", last)
        started = time.monotonic()
        call = stub.Watch(health_pb2.HealthCheckRequest(service=service),
                          timeout=min(ATTEMPT_SECONDS, remaining), wait_for_ready=True)
        try:
            async for reply in call:
                if reply.status == SERVING:
                    call.cancel()
                    return
                last = _status_name(reply.status)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise RuntimeError("the server serves no grpc.health.v1 service") from err
            if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                last = err.code().name
        if time.monotonic() - started < RETRY_PAUSE_SECONDS:
            await asyncio.sleep(RETRY_PAUSE_SECONDS)  # the stream ended at once: do not spin
