"""Send hostile requests to every RPC of a running service and tally the status codes.

Every method is found from the service's descriptor, so an RPC added to a proto is fuzzed
without a change here. Requests go as raw bytes (the channel's serializer is the identity),
so undecodable bytes reach the server exactly as a hostile caller would send them. Each
message of a request stream is hostile in turn; server streams are read to a bounded number
of items, and the live feeds (`Follow*`) are cancelled after a short wait.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time
from collections.abc import Callable, Sequence

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

from tests.reliability.hostile import HostileMessages
from vitrine.v1 import gateway_pb2, journey_pb2, profile_pb2, recommend_pb2, segment_pb2

# The generated modules register their services in the default descriptor pool.
_REGISTERED = (gateway_pb2, journey_pb2, profile_pb2, recommend_pb2, segment_pb2)

# A clear answer a caller can act on. UNIMPLEMENTED: an RPC of the contract not built yet.
ACCEPTED_CODES = frozenset({
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED,
})
CALL_TIMEOUT_SECONDS = 30.0  # past it a call counts as a hang (DEADLINE_EXCEEDED is not accepted)
FOLLOW_WAIT_SECONDS = 0.2  # a live feed that answered nothing bad within this long is fine
MAX_STREAM_ITEMS = 50
STREAM_MESSAGES = (1, 2, 3, 8, 20)  # messages per request stream
LIVE = "LIVE"  # a Follow* stream still open when we stopped reading: a healthy live feed
CLIENT_ARTIFACT = "Internal error from Core"
CLIENT_WRITE_AFTER_STATUS = "CLIENT_WRITE_AFTER_STATUS"
SERVER_FAILURE_CODES = ("INTERNAL", "UNKNOWN", "DATA_LOSS")


@dataclasses.dataclass
class Tally:
    method: str
    requests: int = 0  # request messages sent (each message of a stream counts)
    calls: int = 0
    codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    bad: list[str] = dataclasses.field(default_factory=list)  # "CODE: details" of unaccepted answers
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad

    def record(self, code: str, details: str, accepted: bool) -> None:
        self.codes[code] += 1
        if not accepted and len(self.bad) < 20:
            self.bad.append(f"{code}: {details[:300]}")


def methods_of(service_full_name: str) -> list[MethodDescriptor]:
    from grpc_health.v1 import health_pb2  # noqa: F401  registers grpc.health.v1.Health

    service = descriptor_pool.Default().FindServiceByName(service_full_name)
    return list(service.methods)


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def _one_call(channel: grpc.aio.Channel, method: MethodDescriptor, gen: HostileMessages,
                    rng: random.Random, tally: Tally, metadata: Sequence[tuple[str, str]] | None) -> None:
    path = _path(method)
    follow = method.name.startswith("Follow")
    tally.calls += 1
    try:
        if method.client_streaming:
            messages = [gen.next() for _ in range(rng.choice(STREAM_MESSAGES))]
            tally.requests += len(messages)
            if method.server_streaming:
                call = channel.stream_stream(path)(iter(messages), timeout=CALL_TIMEOUT_SECONDS, metadata=metadata)
                await _drain(call, follow)
            else:
                await channel.stream_unary(path)(iter(messages), timeout=CALL_TIMEOUT_SECONDS, metadata=metadata)
        else:
            request = gen.next()
            tally.requests += 1
            if method.server_streaming:
                call = channel.unary_stream(path)(request, timeout=CALL_TIMEOUT_SECONDS, metadata=metadata)
                if await _drain(call, follow):
                    tally.record(LIVE, "", True)
                    return
            else:
                await channel.unary_unary(path)(request, timeout=CALL_TIMEOUT_SECONDS, metadata=metadata)
        tally.record("OK", "", True)
    except grpc.aio.AioRpcError as err:
        code = err.code()
        if method.client_streaming and code is grpc.StatusCode.INTERNAL and err.details() == CLIENT_ARTIFACT:
            # grpc.aio client bug (grpc/grpc#36066): the server ended the stream with its status
            # (an abort on a bad message) while this client was still writing; the failed write
            # replaces the server's status. The server side is checked by its own metric.
            tally.record(CLIENT_WRITE_AFTER_STATUS, "", True)
            return
        tally.record(code.name, err.details() or "", code in ACCEPTED_CODES)


async def _drain(call: grpc.aio.Call, follow: bool) -> bool:
    """Read a server stream to its end or MAX_STREAM_ITEMS; True when a live feed was left open."""
    items = 0

    async def read() -> None:
        nonlocal items
        async for _ in call:  # type: ignore[attr-defined]
            items += 1
            if items >= MAX_STREAM_ITEMS:
                call.cancel()
                return

    task = asyncio.ensure_future(read())
    done, _ = await asyncio.wait({task}, timeout=FOLLOW_WAIT_SECONDS if follow else None)
    if not done:
        call.cancel()
        try:
            await task
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        return True
    try:
        task.result()
    except grpc.aio.AioRpcError as err:
        if err.code() is grpc.StatusCode.CANCELLED and items >= MAX_STREAM_ITEMS:
            return False
        raise
    return False


async def fuzz_method(channel: grpc.aio.Channel, method: MethodDescriptor, *, requests: int, seed: int,
                      concurrency: int = 8, time_limit: float = 600.0,
                      metadata: Sequence[tuple[str, str]] | None = None,
                      fixups: Sequence[Callable[..., None]] = ()) -> Tally:
    """Send at least `requests` hostile request messages to `method` (or until `time_limit`)."""
    if method.name.startswith("Follow"):
        # a live feed's call waits FOLLOW_WAIT_SECONDS with nothing to do: more of them in flight
        # keeps the 10,000 requests of the slow set from costing minutes of idle waiting
        concurrency = max(concurrency, 100)
    rng = random.Random(f"{seed}:{_path(method)}")
    gen = HostileMessages(method.input_type, rng, fixups)
    tally = Tally(_path(method))
    started = time.monotonic()

    async def worker() -> None:
        while tally.requests < requests and time.monotonic() - started < time_limit:
            await _one_call(channel, method, gen, rng, tally, metadata)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.seconds = time.monotonic() - started
    return tally


def summary(tallies: Sequence[Tally]) -> str:
    lines = []
    for t in tallies:
        codes = ", ".join(f"{code} {n}" for code, n in t.codes.most_common())
        lines.append(f"{t.method}: {t.requests} messages in {t.calls} calls, {t.seconds:.1f}s: {codes}")
    return "\n".join(lines)


def server_failures(method: str) -> float:
    """INTERNAL/UNKNOWN answers the in-process servers recorded for `method` (their own metric)."""
    from prometheus_client import REGISTRY

    total = 0.0
    for code in SERVER_FAILURE_CODES:
        for service in ("profile", "segmentation", "recommendation", "gateway", "journeys"):
            value = REGISTRY.get_sample_value("vitrine_grpc_server_handled_total",
                                              {"service": service, "method": method, "code": code})
            total += value or 0.0
    return total
