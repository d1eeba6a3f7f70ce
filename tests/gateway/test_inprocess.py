"""The one-process mode: in-process stubs fail as gRPC stubs do, and the REAL services sharing
one process behind the gateway answer as over the network, keep their own gRPC APIs, and still
answer inside the deadline with fallbacks when a backend raises or hangs in that process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import ServerConfig
from services.common.errors import NotFound
from services.common.server import build_server
from services.gateway.all_in_one import PROFILE, RECOMMEND, SEGMENTS, AllInOne, AllInOneConfig
from services.gateway.inprocess import Captured, InProcessStub, _UnaryCall
from tests.support import assert_status
from vitrine.loadtest.fakes import FakeProfile
from vitrine.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, profile_pb2, profile_pb2_grpc

BUDGET_MS = 300
# The answer must come at the deadline, not after the hung backend: slack for a shared 2-core machine.
DEADLINE_SLACK = 0.7


class Misbehaving(profile_pb2_grpc.ProfileServiceServicer):
    """GetProfile fails as the user id says."""

    async def GetProfile(self, request: profile_pb2.GetProfileRequest,
                         context: grpc.aio.ServicerContext) -> common_pb2.Profile:
        match request.user_id:
            case "raise":
                raise RuntimeError("a bug in the backend")
            case "domain":
                raise NotFound("no profile for user 'domain'")
            case "abort":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "erase it first")
            case "hang":
                await asyncio.Event().wait()
            case "block":  # computes past the deadline without awaiting: cannot be interrupted
                time.sleep(0.4)  # noqa: ASYNC251 - the point of the case
            case "remaining":
                return common_pb2.Profile(user_id=f"{context.time_remaining():.3f}")
        return common_pb2.Profile(user_id=request.user_id)


class MisbehavingService:
    name = "misbehaving"
    service_names = (PROFILE,)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(Misbehaving(), server)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@pytest.fixture
async def misbehaving() -> AsyncIterator[tuple[InProcessStub, profile_pb2_grpc.ProfileServiceStub]]:
    captured = Captured(MisbehavingService())
    running = await build_server(ServerConfig(port=0), captured)
    channel = grpc.aio.insecure_channel(running.address)
    try:
        yield captured.stub(PROFILE), profile_pb2_grpc.ProfileServiceStub(channel)
    finally:
        await channel.close()
        await running.stop(0)


@pytest.mark.parametrize(("user_id", "code"), [
    ("raise", grpc.StatusCode.INTERNAL),
    ("domain", grpc.StatusCode.NOT_FOUND),
    ("abort", grpc.StatusCode.FAILED_PRECONDITION),
    ("hang", grpc.StatusCode.DEADLINE_EXCEEDED),
    ("block", grpc.StatusCode.DEADLINE_EXCEEDED),  # the late answer is discarded, as a stub discards it
])
async def test_in_process_calls_fail_as_the_grpc_stub_does(misbehaving: tuple[Any, Any], user_id: str,
                                                           code: grpc.StatusCode) -> None:
    local, remote = misbehaving
    request = profile_pb2.GetProfileRequest(user_id=user_id)
    over_grpc = await assert_status(remote.GetProfile(request, timeout=0.3), code)
    in_process = await assert_status(local.GetProfile(request, timeout=0.3), code)
    if code != grpc.StatusCode.DEADLINE_EXCEEDED:
        assert in_process.details() == over_grpc.details()


async def test_in_process_calls_answer_and_see_their_deadline(misbehaving: tuple[Any, Any]) -> None:
    local, _ = misbehaving
    assert (await local.GetProfile(profile_pb2.GetProfileRequest(user_id="u1"), timeout=1)).user_id == "u1"
    remaining = await local.GetProfile(profile_pb2.GetProfileRequest(user_id="remaining"), timeout=2)
    assert 0 < float(remaining.user_id) <= 2


async def test_streaming_methods_go_to_the_remote_stub() -> None:
    captured = Captured(FakeProfile())
    running = await build_server(ServerConfig(port=0), captured)
    try:
        remote = object()
        stub = captured.stub(PROFILE, remote)
        assert callable(stub.GetProfile)
        with pytest.raises(AttributeError):
            _ = stub.FollowEvents  # not on the remote stand-in: not run in-process either
        with pytest.raises(ValueError, match="registered no"):
            captured.stub(SEGMENTS)
    finally:
        await running.stop(0)


# --- the real services in one process ---------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def together(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AllInOne]:
    from tests.gateway.real import DEMO_PRODUCTS, DEMO_SHOPPERS
    from vitrine.demo.config import DemoConfig
    from vitrine.demo.loader import load_demo

    root = Path(tmp_path_factory.mktemp("together"))
    suite = AllInOne(AllInOneConfig(port=0, profile_port=0, segmentation_port=0, recommendation_port=0,
                                    data_dir=str(root), log_level="WARNING"))
    await suite.start()
    try:
        address = {name: running.address for name, running in suite.servers.items()}
        report = await load_demo(
            DemoConfig(n_products=DEMO_PRODUCTS, n_shoppers=DEMO_SHOPPERS, seed=5),
            profile_addresses=[address["profile"]], gateway_address=address["gateway"],
            segmentation_address=address["segmentation"], recommendation_address=address["recommendation"],
            progress=False)
        assert not report.errors, report.errors[:5]
        gateway = suite.servers["gateway"].service
        await gateway.trending.refresh()  # type: ignore[attr-defined]
        yield suite
    finally:
        await suite.stop(0)


async def _shopper(suite: AllInOne) -> str:
    async with grpc.aio.insecure_channel(suite.servers["profile"].address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        async for profile in stub.ScanProfiles(profile_pb2.ScanProfilesRequest(limit=200), timeout=10):
            if len(profile.recently_viewed) >= 2 and profile.consent.personalization:
                return profile.user_id
    raise AssertionError("the demo store has no shopper with views")


async def _personalize(suite: AllInOne, user_id: str, deadline_ms: int = 0
                       ) -> tuple[gateway_pb2.PersonalizeResponse, float]:
    async with grpc.aio.insecure_channel(suite.servers["gateway"].address) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        started = time.perf_counter()
        reply = await stub.Personalize(gateway_pb2.PersonalizeRequest(
            user_id=user_id, page_type="home", deadline_ms=deadline_ms), timeout=10)
        return reply, time.perf_counter() - started


@pytest.mark.asyncio(loop_scope="module")
async def test_the_shared_process_answers_personalized_and_calls_in_process(together: AllInOne) -> None:
    gateway = together.servers["gateway"].service
    assert isinstance(gateway.composer.recommend, InProcessStub)  # type: ignore[attr-defined]
    reply, _ = await _personalize(together, await _shopper(together))
    assert reply.personalized and reply.fallback_reason == ""
    assert [p.slot_id for p in reply.placements] == ["for_you", "trending"] and all(p.items for p in reply.placements)
    assert reply.model_version


@pytest.mark.asyncio(loop_scope="module")
async def test_every_service_keeps_its_own_grpc_api(together: AllInOne) -> None:
    for name, running in together.servers.items():
        async with grpc.aio.insecure_channel(running.address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING, name
    user_id = await _shopper(together)
    async with grpc.aio.insecure_channel(together.servers["profile"].address) as channel:
        profile = await profile_pb2_grpc.ProfileServiceStub(channel).GetProfile(
            profile_pb2.GetProfileRequest(user_id=user_id), timeout=5)
    assert profile.user_id == user_id


@pytest.mark.asyncio(loop_scope="module")
async def test_a_backend_raising_in_the_shared_process_degrades_one_part(together: AllInOne,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    user_id = await _shopper(together)
    recommendation = together.captured["recommendation"].inner

    def crash(*args: object, **kwargs: object) -> object:
        raise RuntimeError("recommendation crashed")

    monkeypatch.setattr(recommendation, "recommend_many", crash)
    monkeypatch.setattr(recommendation, "recommend", crash)
    reply, _ = await _personalize(together, user_id)
    assert reply.fallback_reason == "recommendation_unavailable" and reply.personalized  # segments still came
    assert all(p.fallback and p.items and p.strategy_used == "TRENDING" for p in reply.placements)
    monkeypatch.undo()
    again, _ = await _personalize(together, user_id)  # nothing to restart: the next call is served
    assert again.fallback_reason == ""


@pytest.mark.asyncio(loop_scope="module")
async def test_a_backend_hanging_in_the_shared_process_misses_only_its_deadline(together: AllInOne) -> None:
    user_id = await _shopper(together)
    gateway = together.servers["gateway"].service
    segments = gateway.composer.segments  # type: ignore[attr-defined]
    real_evaluate = segments.Evaluate
    hung: list[bool] = []

    async def never(request: Any, context: Any) -> Any:  # a servicer that never answers
        hung.append(True)
        await asyncio.Event().wait()

    hang = _UnaryCall("Evaluate", never)  # behind the same adapter as the real servicer
    segments.Evaluate = hang
    try:
        reply, elapsed = await _personalize(together, user_id, deadline_ms=BUDGET_MS)
    finally:
        segments.Evaluate = real_evaluate
    assert hung, "the hung Evaluate was called"
    assert "segmentation_unavailable" in reply.fallback_reason
    assert elapsed < BUDGET_MS / 1000 + DEADLINE_SLACK
    assert all(not p.fallback for p in reply.placements)  # recommendation answered meanwhile
    again, _ = await _personalize(together, user_id)
    assert again.fallback_reason == ""


@pytest.mark.asyncio(loop_scope="module")
async def test_a_shared_process_over_loopback_grpc_also_works(tmp_path: Path) -> None:
    suite = AllInOne(AllInOneConfig(port=0, profile_port=0, segmentation_port=0, recommendation_port=0,
                                    data_dir=str(tmp_path), log_level="WARNING", in_process=False))
    await suite.start()
    try:
        gateway = suite.servers["gateway"].service
        assert not isinstance(gateway.composer.recommend, InProcessStub)  # type: ignore[attr-defined]
        reply, _ = await _personalize(suite, "nobody")
        assert reply.fallback_reason.startswith("unknown_user")
    finally:
        await suite.stop(0)


def test_names_match_the_generated_services() -> None:
    from vitrine.v1 import profile_pb2 as p
    from vitrine.v1 import recommend_pb2 as r
    from vitrine.v1 import segment_pb2 as s

    assert p.DESCRIPTOR.services_by_name["ProfileService"].full_name == PROFILE
    assert s.DESCRIPTOR.services_by_name["SegmentService"].full_name == SEGMENTS
    assert r.DESCRIPTOR.services_by_name["RecommendService"].full_name == RECOMMEND


def test_the_supervisor_runs_the_shared_process_as_vitrine_up_does(tmp_path: Path) -> None:
    """The one-machine mode as a supervised child: one process answers on all four ports."""
    from vitrine.ports import free_ports
    from vitrine.supervisor import SHARED_SERVICES, Suite, SuiteLayout

    names = ("gateway", "profile", "segmentation", "recommendation")
    layout = SuiteLayout(data_dir=tmp_path, ports=dict(zip(names, free_ports(len(names)), strict=True)))
    gateway_only = [spec for spec in SHARED_SERVICES if spec.name == "gateway"]
    with Suite(layout, env={"VITRINE_LOG_LEVEL": "WARNING"}, services=gateway_only) as suite:
        [child] = suite.children
        assert "services.gateway.all_in_one" in child.argv
        for name in names:
            address = layout.profile_addresses()[0] if name == "profile" else layout.address(name)
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        with grpc.insecure_channel(layout.address("gateway")) as channel:
            answer = gateway_pb2_grpc.PersonalizationServiceStub(channel).Personalize(
                gateway_pb2.PersonalizeRequest(user_id="nobody", page_type="home"), timeout=30)
        assert answer.fallback_reason.startswith("unknown_user")
