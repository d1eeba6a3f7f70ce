"""Run a Service in process on a free port for the length of a block (tests and benchmarks)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from services.common.config import ServerConfig
from services.common.server import RunningServer, Service, build_server


@contextlib.asynccontextmanager
async def serving(service: Service, config: ServerConfig) -> AsyncIterator[RunningServer]:
    """Run `service` on config's port (0: a free one) for the duration of the block."""
    running = await build_server(config, service)
    try:
        yield running
    finally:
        await running.stop(0)
