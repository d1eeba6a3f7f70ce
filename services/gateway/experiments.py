"""Experiments in Personalize: which placements may be under an experiment, and the exposure log.

Assignments come from segmentation's `Evaluate` (no extra call on the hot path). A placement
under an experiment must wait for that answer before its items are asked for, so the gateway
keeps the set of slot ids that running experiments hold (`ExperimentSlots`, refreshed in the
background with `ListExperiments`): only requests with such a slot wait; the others keep
Evaluate and Recommend concurrent.

Exposures (`ExposureLog`) are written as EXPOSURE events through the profile service's log
(`TrackBatch`), off the request path: a bounded FIFO queue, one background writer. What can be
lost, and why the loss does not depend on the variant, is in the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

import grpc

from services.common.tasks import cancel_and_wait
from services.gateway import config as limits
from services.gateway.metrics import EXPOSURES
from vitrine.v1 import common_pb2, profile_pb2, segment_pb2

log = logging.getLogger(__name__)


class ExperimentSlots:
    """Slot ids held by running experiments; `holds()` never waits on the network.

    Refreshed every EXPERIMENT_REFRESH_S from `ListExperiments(active_only)`. A slot named by an
    assignment that the set does not know yet (an experiment started since the last refresh) is
    added at once (`learn`), so only the requests before that one serve it without its variant.
    """

    def __init__(self, segments: Any, refresh_seconds: float = limits.EXPERIMENT_REFRESH_S) -> None:
        self._segments = segments
        self._refresh_seconds = refresh_seconds
        self.slots: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def holds(self, slot_id: str) -> bool:
        return slot_id in self.slots

    def learn(self, slot_ids: Iterable[str]) -> None:
        new = set(slot_ids) - self.slots
        if new:
            self.slots = self.slots | new

    async def refresh(self) -> bool:
        try:
            reply = await self._segments.ListExperiments(segment_pb2.ListExperimentsRequest(active_only=True),
                                                         timeout=limits.EXPERIMENT_CALL_TIMEOUT_S)
        except (grpc.aio.AioRpcError, TimeoutError) as err:
            if isinstance(err, grpc.aio.AioRpcError) and err.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.debug("segmentation has no ListExperiments: experimented slots are learned from assignments")
            return False
        self.slots = frozenset(e.slot_id for e in reply.experiments if e.slot_id)
        return True

    def start(self) -> None:
        if self._task is None and self._refresh_seconds > 0:
            self._task = asyncio.create_task(self._loop(), name="experiment-slots")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except Exception:  # a refresh must never end the loop
                log.exception("experiment slots refresh failed")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


def exposure_event(user_id: str, session_id: str, context: common_pb2.Context,
                   served: Iterable[segment_pb2.Assignment], now_ms: int | None = None) -> common_pb2.Event:
    """One EXPOSURE event carrying every assignment served by one Personalize answer."""
    event = common_pb2.Event(
        event_id=f"exp-{uuid.uuid4().hex}", user_id=user_id, session_id=session_id, type=common_pb2.EXPOSURE,
        timestamp_ms=int(time.time() * 1000) if now_ms is None else now_ms, context=context)
    for assignment in served:
        event.exposures.add(experiment_id=assignment.experiment_id, variant_id=assignment.variant_id,
                            slot_id=assignment.slot_id)
    return event


class ExposureLog:
    """Exposure events to the profile log, off the request path.

    `offer()` never blocks: a full queue drops the event (counted). The writer sends batches of up
    to EXPOSURE_BATCH_SIZE through the router's TrackBatch and resends a batch that was not
    acknowledged (a shard down or late) up to EXPOSURE_ATTEMPTS times, with a pause between;
    resending is safe because each event has its own event_id. Which event is dropped depends only
    on when it was offered and on the profile service's health, never on what it carries.
    """

    def __init__(self, router: Any, *, queue_size: int = limits.EXPOSURE_QUEUE_SIZE,
                 batch_size: int = limits.EXPOSURE_BATCH_SIZE, linger: float = limits.EXPOSURE_LINGER_S,
                 attempts: int = limits.EXPOSURE_ATTEMPTS, retry_pause: float = limits.EXPOSURE_RETRY_PAUSE_S) -> None:
        self._router = router
        self._queue: asyncio.Queue[common_pb2.Event] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._linger = linger
        self._attempts = attempts
        self._retry_pause = retry_pause
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self._counters = {outcome: EXPOSURES.labels(outcome)
                          for outcome in ("offered", "written", "duplicate", "dropped_full", "failed", "rejected")}

    def offer(self, event: common_pb2.Event) -> bool:
        self._counters["offered"].inc()
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            self._counters["dropped_full"].inc()
            return False
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="exposure-log")

    async def stop(self, flush_seconds: float = limits.EXPOSURE_FLUSH_S) -> None:
        """Write what is queued (bounded in time), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), flush_seconds)
        await cancel_and_wait(self._task)
        self._task = None

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger > 0 and self._queue.qsize() + 1 < self._batch_size:
                await asyncio.sleep(self._linger)  # let a batch gather: one call per linger period
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception:  # the writer must outlive anything
                log.exception("exposure writer failed; %d exposures dropped", len(batch))
                self._lost(len(batch), "failed")
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _lost(self, count: int, outcome: str) -> None:
        self.dropped += count
        self._counters[outcome].inc(count)

    async def _write(self, batch: list[common_pb2.Event]) -> None:
        request = profile_pb2.TrackBatchRequest(events=batch)
        for attempt in range(1, self._attempts + 1):
            try:
                summary = await self._router.track_batch(request, limits.EXPOSURE_CALL_TIMEOUT_S)
            except (grpc.aio.AioRpcError, TimeoutError) as err:
                if isinstance(err, grpc.aio.AioRpcError) and err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    await self._write_one_by_one(batch)
                    return
                why = err.code().name if isinstance(err, grpc.aio.AioRpcError) else "timeout"
                log.warning("exposure batch of %d not written (attempt %d/%d): %s", len(batch), attempt,
                            self._attempts, why)
            else:
                unacknowledged = sum("not acknowledged" in e for e in summary.errors)
                if not unacknowledged or attempt == self._attempts:
                    applied = summary.accepted + summary.duplicates
                    self.written += applied
                    self._counters["written"].inc(summary.accepted)
                    self._counters["duplicate"].inc(summary.duplicates)
                    if summary.rejected:
                        self._lost(summary.rejected - unacknowledged, "rejected")
                        self._lost(unacknowledged, "failed")
                        log.warning("%d exposures refused by the profile service: %s", summary.rejected,
                                    "; ".join(summary.errors[:3]))
                    return
                # Some shard did not acknowledge: resend the batch (the others come back as duplicates).
            if attempt < self._attempts:
                await asyncio.sleep(self._retry_pause * attempt)
        self._lost(len(batch), "failed")

    async def _write_one_by_one(self, batch: list[common_pb2.Event]) -> None:
        """A profile service without TrackBatch (an older release): one Track per event."""
        for event in batch:
            try:
                await self._router.track(profile_pb2.TrackRequest(event=event), limits.EXPOSURE_CALL_TIMEOUT_S)
            except (grpc.aio.AioRpcError, TimeoutError):
                self._lost(1, "failed")
            else:
                self.written += 1
                self._counters["written"].inc()
