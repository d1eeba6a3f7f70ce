"""The shared helpers of vitrine.ports and vitrine.health, against a real in-process server."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

import grpc
import pytest

from scoring.units import DAY_MS, HOUR_MS, MINUTE_MS
from services.common.config import ServerConfig
from services.common.server import build_server
from vitrine.health import wait_serving, wait_serving_async
from vitrine.ports import free_port, free_port_base, free_ports


class HeldService:
    """Starts only when told to: health reports NOT_SERVING until then."""

    name = "held"
    service_names: Sequence[str] = ("test.Held",)

    def __init__(self) -> None:
        self.starting = asyncio.Event()
        self.may_start = asyncio.Event()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        return None

    async def start(self) -> None:
        self.starting.set()
        await asyncio.wait_for(self.may_start.wait(), 10)

    async def stop(self) -> None:
        return None


def test_units() -> None:
    assert (MINUTE_MS, HOUR_MS, DAY_MS) == (60_000, 3_600_000, 86_400_000)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in (*ports, free_port()):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    base = free_port_base(3, 10)
    for i in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", base + 10 * i))


async def test_wait_serving_async_returns_once_started() -> None:
    service = HeldService()
    port = free_port()
    task = asyncio.create_task(build_server(ServerConfig(port=port), service))
    try:
        await asyncio.wait_for(service.starting.wait(), 10)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(TimeoutError, match="NOT_SERVING"):
                await wait_serving_async(channel, 0.3, service="test.Held")
            waiter = asyncio.create_task(wait_serving_async(channel, 10, service="test.Held"))
            assert not waiter.done()
            service.may_start.set()
            await asyncio.wait_for(waiter, 10)
    finally:
        service.may_start.set()
        await (await task).stop(0)


async def test_wait_serving_blocking_waits_for_a_port_that_opens_later() -> None:
    service = HeldService()
    service.may_start.set()
    port = free_port()
    waiter = asyncio.create_task(asyncio.to_thread(wait_serving, f"127.0.0.1:{port}", time.monotonic() + 20))
    running = await build_server(ServerConfig(port=port), service)
    try:
        await asyncio.wait_for(waiter, 20)
    finally:
        await running.stop(0)


def test_wait_serving_notices_a_dead_process() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(10)
    with pytest.raises(RuntimeError, match="code 3"):
        wait_serving(f"127.0.0.1:{free_port()}", time.monotonic() + 10, process)


def test_wait_serving_times_out_naming_the_last_status() -> None:
    with pytest.raises(TimeoutError, match="did not report SERVING"):
        wait_serving(f"127.0.0.1:{free_port()}", time.monotonic() + 0.5)
