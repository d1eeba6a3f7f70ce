"""Best-effort forwarding of tracked events to the recommendation service's Observe.

`offer()` never blocks and never fails: events go into a bounded queue that a
background task drains in batches (gathered for up to OBSERVE_LINGER_S) over short
client-streaming Observe calls, each with a timeout. A full queue or a failed batch drops events and counts them; losing
an Observe costs freshness of trending and bought-together counts, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc

from services.gateway import config as limits
from services.gateway.metrics import OBSERVE_FORWARDED
from vitrine.v1 import common_pb2

log = logging.getLogger(__name__)


class ObserveForwarder:
    def __init__(self, recommend: Any, *, queue_size: int = limits.OBSERVE_QUEUE_SIZE,
                 batch_size: int = limits.OBSERVE_BATCH_SIZE, linger: float = limits.OBSERVE_LINGER_S) -> None:
        self._recommend = recommend
        self._queue: asyncio.Queue[common_pb2.Event] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._linger = linger
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0

    def offer(self, event: common_pb2.Event) -> bool:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            OBSERVE_FORWARDED.labels("dropped_full").inc()
            return False
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="observe-forwarder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger > 0 and self._queue.qsize() + 1 < self._batch_size:
                await asyncio.sleep(self._linger)  # let a batch gather
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._recommend.Observe(iter(batch), timeout=limits.OBSERVE_CALL_TIMEOUT_S)
            except (TimeoutError, grpc.aio.AioRpcError) as err:
                self.dropped += len(batch)
                OBSERVE_FORWARDED.labels("failed").inc(len(batch))
                log.warning("Observe failed, %d events dropped: %s", len(batch),
                            err.code().name if isinstance(err, grpc.aio.AioRpcError) else "timeout")
                await asyncio.sleep(limits.OBSERVE_RETRY_PAUSE_S)
            except Exception:
                self.dropped += len(batch)
                OBSERVE_FORWARDED.labels("failed").inc(len(batch))
                log.exception("Observe forwarding failed")
                await asyncio.sleep(limits.OBSERVE_RETRY_PAUSE_S)
            else:
                self.sent += len(batch)
                OBSERVE_FORWARDED.labels("sent").inc(len(batch))
