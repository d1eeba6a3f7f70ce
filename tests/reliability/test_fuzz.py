"""Hostile requests to every RPC of every service, through real in-process servers.

Each RPC gets FAST_REQUESTS hostile request messages here and SLOW_REQUESTS in the slow set
(`-m slow`). Expected for each: a clear status (never INTERNAL, UNKNOWN, UNAVAILABLE or a hang
past the deadline), every service still SERVING, and the stored state of the shoppers the
fuzzer never named unchanged.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.reliability.fuzz import Tally, fuzz_method, methods_of, server_failures, summary
from tests.reliability.inprocess import InProcessSuite, journeys_available, protected_state, start_inprocess_suite

FAST_REQUESTS = int(os.environ.get("VITRINE_FUZZ_FAST_REQUESTS", "150"))
SLOW_REQUESTS = int(os.environ.get("VITRINE_FUZZ_SLOW_REQUESTS", "10000"))
# The slow set is bounded in time as well: an RPC that is slow per call (Train) stops here.
SLOW_TIME_LIMIT_SECONDS = float(os.environ.get("VITRINE_FUZZ_TIME_LIMIT", "240"))
SEED = int(os.environ.get("VITRINE_FUZZ_SEED", "19"))

SERVICES = {
    "profile": "vitrine.v1.ProfileService",
    "segmentation": "vitrine.v1.SegmentService",
    "recommendation": "vitrine.v1.RecommendService",
    "gateway": "vitrine.v1.PersonalizationService",
}
if journeys_available():
    SERVICES["journeys"] = "vitrine.v1.JourneyService"
TARGETS = [(name, m.name) for name, full in SERVICES.items() for m in methods_of(full)]
TARGETS += [(name, "grpc.health.v1.Health/Check") for name in SERVICES]
RESULTS: list[Tally] = []


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def suite(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessSuite]:
    running = await start_inprocess_suite(Path(tmp_path_factory.mktemp("fuzz")))
    before = await protected_state(running.address("profile"))
    yield running
    try:
        after = await protected_state(running.address("profile"))
        assert after == before, "the fuzzer changed shoppers it never named"
    finally:
        await running.close()
        report = os.environ.get("VITRINE_FUZZ_REPORT")
        if report:
            Path(report).write_text(summary(RESULTS) + "\n")  # noqa: ASYNC240 - teardown, once


def _method(name: str, rpc: str) -> object:
    if "/" in rpc:
        from google.protobuf import descriptor_pool

        service, method = rpc.split("/")
        return descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    return next(m for m in methods_of(SERVICES[name]) if m.name == rpc)


async def _fuzz(suite: InProcessSuite, name: str, rpc: str, requests: int, time_limit: float) -> None:
    method = _method(name, rpc)
    failures_before = server_failures(f"/{method.containing_service.full_name}/{method.name}")  # type: ignore[attr-defined]
    async with grpc.aio.insecure_channel(suite.address(name)) as channel:
        tally = await fuzz_method(channel, method, requests=requests, seed=SEED,  # type: ignore[arg-type]
                                  time_limit=time_limit)
        RESULTS.append(tally)
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert tally.ok, f"{tally.method}: {tally.bad}\n{summary([tally])}"
    assert server_failures(tally.method) == failures_before, f"{tally.method}: the server answered INTERNAL"
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert tally.requests >= min(requests, 1), summary([tally])


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "rpc"), TARGETS, ids=[f"{n}.{r}" for n, r in TARGETS])
async def test_hostile_requests_get_a_clear_status(suite: InProcessSuite, name: str, rpc: str) -> None:
    await _fuzz(suite, name, rpc, FAST_REQUESTS, 120.0)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIME_LIMIT_SECONDS + 120)
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "rpc"), TARGETS, ids=[f"{n}.{r}" for n, r in TARGETS])
async def test_ten_thousand_hostile_requests_per_rpc(suite: InProcessSuite, name: str, rpc: str) -> None:
    await _fuzz(suite, name, rpc, SLOW_REQUESTS, SLOW_TIME_LIMIT_SECONDS)
