"""The suite as real processes under the supervisor: paused backends (SIGSTOP) and crashes
(SIGKILL) while traffic runs.

- Paused: with each backend stopped in turn, every Personalize answers inside its deadline
  (the client's timeout is the deadline plus a margin for this shared machine) with the right
  `fallback_reason`; Track answers an error the caller can retry while the profile service is
  paused, and a retry after SIGCONT applies the event exactly once; the suite recovers without
  a restart.
- Crashed: SIGKILL of the profile service (and of its writer process) under Track load; the
  supervisor restarts it, and every acknowledged event is there once. Rounds: CRASH_ROUNDS
  (VITRINE_CRASH_ROUNDS, default 20; VITRINE_CRASH_ROUNDS_OTHER, default 10, for the other services).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.gateway.config import TRENDING_EMPTY_REFRESH_S
from tests.support import known_shopper
from vitrine.ports import free_ports
from vitrine.supervisor import DEFAULT_PORTS, State, Suite, SuiteLayout
from vitrine.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, profile_pb2, profile_pb2_grpc

pytestmark = pytest.mark.slow

DEADLINE_MS = 200
MARGIN_S = 1.0  # the machine is shared: the answer must come, the deadline itself is the gateway's job
PERSONALIZE_CALLS = 30
CRASH_ROUNDS = int(os.environ.get("VITRINE_CRASH_ROUNDS", "20"))  # the issue: 20 rounds
RECOVERY_TIMEOUT_S = 120.0
FIGURES: dict[str, object] = {}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    from vitrine.demo.config import DemoConfig
    from vitrine.demo.loader import load_demo

    root = tmp_path_factory.mktemp("procs")
    layout = SuiteLayout(data_dir=root / "data", ports=dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)),
                                                                  strict=True)))
    running = Suite(layout, env={"VITRINE_LOG_LEVEL": "WARNING"}, max_restarts=CRASH_ROUNDS + 2,
                    backoff_initial=0.1, backoff_max=1.0)
    running.start()
    try:
        asyncio.run(load_demo(
            DemoConfig(n_products=200, n_shoppers=60, seed=3), profile_addresses=layout.profile_addresses(),
            gateway_address=layout.address("gateway"), segmentation_address=layout.address("segmentation"),
            recommendation_address=layout.address("recommendation"), progress=False))
        yield running
    finally:
        running.stop()
        report = os.environ.get("VITRINE_PROCESS_REPORT")
        if report:
            Path(report).write_text("\n".join(f"{k}: {v}" for k, v in FIGURES.items()) + "\n")


def personalize(stub: gateway_pb2_grpc.PersonalizationServiceStub, user: str) -> tuple[gateway_pb2.PersonalizeResponse,
                                                                                       float]:
    started = time.perf_counter()
    reply = stub.Personalize(gateway_pb2.PersonalizeRequest(user_id=user, page_type="home", deadline_ms=DEADLINE_MS),
                             timeout=DEADLINE_MS / 1000 + MARGIN_S)
    return reply, (time.perf_counter() - started) * 1000


def wait_personalized(stub: gateway_pb2_grpc.PersonalizationServiceStub, user: str) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        reply, _ = personalize(stub, user)
        if reply.personalized and not reply.fallback_reason:
            return
        assert time.monotonic() < deadline, f"not recovered: {reply.fallback_reason}"


@pytest.mark.parametrize(("backend", "reason"), [("recommendation", "recommendation_unavailable"),
                                                 ("segmentation", "segmentation_unavailable"),
                                                 ("profile", "profile_unavailable")])
def test_a_paused_backend_gets_fallbacks_inside_the_deadline(suite: Suite, backend: str, reason: str) -> None:
    user = known_shopper(suite.layout.profile_addresses()[0])
    child = suite.child(backend)
    assert child.pid is not None
    with grpc.insecure_channel(suite.layout.address("gateway")) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        wait_personalized(stub, user)
        os.kill(child.pid, signal.SIGSTOP)
        latencies = []
        named = with_items = 0
        try:
            for _ in range(PERSONALIZE_CALLS):
                reply, ms = personalize(stub, user)
                latencies.append(ms)
                # On this shared machine the profile call can miss its share of the budget too;
                # then segmentation is not asked, and the answer names the profile instead.
                assert reason in reply.fallback_reason or "profile_unavailable" in reply.fallback_reason, \
                    reply.fallback_reason
                named += reason in reply.fallback_reason
                with_items += all(p.items for p in reply.placements)
        finally:
            os.kill(child.pid, signal.SIGCONT)
        assert named >= PERSONALIZE_CALLS // 2, f"only {named} answers named {reason}"
        latencies.sort()
        FIGURES[f"pause {backend}"] = (f"{PERSONALIZE_CALLS}/{PERSONALIZE_CALLS} answered in time, {named} "
                                       f"with {reason}, {with_items} with items in every placement; "
                                       f"p50 {latencies[len(latencies) // 2]:.0f} ms, max {latencies[-1]:.0f} ms "
                                       f"(deadline {DEADLINE_MS} ms)")
        wait_personalized(stub, user)  # recovered without a restart
    assert child.restarts == 0


def test_the_default_experience_has_items_while_recommendation_is_paused(suite: Suite) -> None:
    user = known_shopper(suite.layout.profile_addresses()[0])
    child = suite.child("recommendation")
    assert child.pid is not None
    with grpc.insecure_channel(suite.layout.address("gateway")) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        wait_personalized(stub, user)
        # The suite was started before its catalog was loaded: the gateway's warm lists were empty
        # and are refreshed every TRENDING_EMPTY_REFRESH_S until the recommendation service has
        # trending items (it has once a personalized answer has them); give it three such periods.
        while not all(p.items for p in personalize(stub, user)[0].placements):
            time.sleep(0.1)
        time.sleep(3 * TRENDING_EMPTY_REFRESH_S)
        os.kill(child.pid, signal.SIGSTOP)
        try:
            reply, _ = personalize(stub, user)
        finally:
            os.kill(child.pid, signal.SIGCONT)
        wait_personalized(stub, user)
    assert reply.placements and all(p.items for p in reply.placements), reply


def test_track_while_the_profile_service_is_paused_is_a_retryable_error(suite: Suite) -> None:
    child = suite.child("profile")
    assert child.pid is not None
    event = common_pb2.Event(event_id="paused-1", user_id="paused-shopper", type=common_pb2.PAGE_VIEW)
    with grpc.insecure_channel(suite.layout.address("gateway")) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        os.kill(child.pid, signal.SIGSTOP)
        try:
            with pytest.raises(grpc.RpcError) as caught:
                stub.Track(profile_pb2.TrackRequest(event=event), timeout=2.0)
            code = caught.value.code()  # type: ignore[attr-defined]
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), code
        finally:
            os.kill(child.pid, signal.SIGCONT)
        stub.Track(profile_pb2.TrackRequest(event=event), timeout=10)  # the retry; may be a duplicate
        profile = stub.GetProfile(profile_pb2.GetProfileRequest(user_id="paused-shopper"), timeout=10)
    assert profile.event_count == 1  # applied exactly once, whether or not the paused attempt got through
    FIGURES["track while profile paused"] = f"{code.name} to the caller; the retry applied the event once"


def supervise_until_serving(suite: Suite, name: str, old_pid: int) -> float:
    child = suite.child(name)
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while not (child.state is State.SERVING and child.pid != old_pid):
        assert child.state is not State.FAILED, "the supervisor gave up"
        assert time.monotonic() < deadline, f"{name} not SERVING again in time"
        suite.poll()
        time.sleep(0.05)  # the supervisor's tick; the loop waits on the child's state
    assert child.last_recovery_seconds is not None
    return child.last_recovery_seconds


async def _track_load(address: str, prefix: str, stop: asyncio.Event, acked: list[str],
                      warmed: asyncio.Event, warm: int = 200) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        i = 0
        while not stop.is_set():
            if i >= warm:
                warmed.set()
            event_id = f"{prefix}-{i}"
            i += 1
            event = common_pb2.Event(event_id=event_id, user_id=f"{prefix}-u{i % 7}", type=common_pb2.PAGE_VIEW)
            try:
                await stub.Track(profile_pb2.TrackRequest(event=event), timeout=2)
                acked.append(event_id)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)  # the service is down: back off, as a client would


def _writer_pid(profile_pid: int) -> int | None:
    """The profile service's writer: its child process (found by parent pid in /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == profile_pid:
            return int(stat.parent.name)
    return None


@pytest.mark.parametrize("target", ["service", "writer"])
def test_kill_9_of_the_profile_service_under_load_loses_nothing(suite: Suite, target: str) -> None:
    address = suite.layout.profile_addresses()[0]
    recoveries = []
    acked: list[str] = []
    for round_ in range(CRASH_ROUNDS):
        prefix = f"crash-{target}-{round_}"
        child = suite.child("profile")
        old_pid = child.pid
        assert old_pid is not None

        async def load_then_kill(prefix: str = prefix, old_pid: int = old_pid) -> None:
            stop, warmed = asyncio.Event(), asyncio.Event()
            task = asyncio.ensure_future(_track_load(address, prefix, stop, acked, warmed))
            await asyncio.wait_for(warmed.wait(), RECOVERY_TIMEOUT_S)
            victim = old_pid if target == "service" else (_writer_pid(old_pid) or old_pid)
            os.kill(victim, signal.SIGKILL)  # a killed writer is restarted by the service on the next write
            await asyncio.sleep(0.2)  # keep the load running across the kill
            stop.set()
            await task

        asyncio.run(load_then_kill())
        if target == "service" or (child.process is not None and child.process.poll() is not None):
            recoveries.append(supervise_until_serving(suite, "profile", old_pid))
        else:
            recoveries.append(0.0)
    with grpc.insecure_channel(address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        wait_until = time.monotonic() + RECOVERY_TIMEOUT_S
        while True:
            try:
                stub.GetProfile(profile_pb2.GetProfileRequest(user_id="nobody"), timeout=2)
            except grpc.RpcError as err:
                if err.code() is grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    break
            assert time.monotonic() < wait_until
        stored: dict[str, int] = {}
        for round_ in range(CRASH_ROUNDS):
            for u in range(7):
                user = f"crash-{target}-{round_}-u{u}"
                for event in stub.GetUserEvents(profile_pb2.GetUserEventsRequest(user_id=user), timeout=10):
                    stored[event.event_id] = stored.get(event.event_id, 0) + 1
    lost = [a for a in acked if a not in stored]
    twice = [e for e, n in stored.items() if n > 1]
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {lost[:5]}"
    assert not twice, f"applied twice: {twice[:5]}"
    FIGURES[f"kill -9 profile {target}"] = (
        f"{CRASH_ROUNDS} rounds, {len(acked)} acknowledged events: 0 lost, 0 twice; kill -> SERVING "
        + ", ".join(f"{r:.1f}" for r in recoveries) + " s")


OTHER_ROUNDS = int(os.environ.get("VITRINE_CRASH_ROUNDS_OTHER", "10"))  # the issue: 10 rounds


def _put(service: str, channel: grpc.aio.Channel, key: str) -> object:
    from vitrine.v1 import journey_pb2, recommend_pb2_grpc, segment_pb2, segment_pb2_grpc

    if service == "segmentation":
        return segment_pb2_grpc.SegmentServiceStub(channel).PutSegment(segment_pb2.PutSegmentRequest(
            segment=segment_pb2.Segment(segment_id=key, name=key, rule="visit_count >= 2")), timeout=2)
    if service == "recommendation":
        product = common_pb2.Product(product_id=key, title=key, category="crash", price=9.5, stock=3)
        return recommend_pb2_grpc.RecommendServiceStub(channel).UpsertProducts(iter([product]), timeout=2)
    from vitrine.v1 import journey_pb2_grpc

    return journey_pb2_grpc.JourneyServiceStub(channel).PutJourney(journey_pb2.PutJourneyRequest(
        journey=journey_pb2.Journey(journey_id=key, name=key, kind=journey_pb2.WELCOME, delay_ms=3_600_000)),
        timeout=2)


def _stored(service: str, channel: grpc.Channel, key: str) -> bool:
    from vitrine.v1 import (
        journey_pb2,
        journey_pb2_grpc,
        recommend_pb2,
        recommend_pb2_grpc,
        segment_pb2,
        segment_pb2_grpc,
    )

    try:
        if service == "segmentation":
            segment_pb2_grpc.SegmentServiceStub(channel).GetSegment(segment_pb2.GetSegmentRequest(segment_id=key),
                                                                    timeout=10)
        elif service == "recommendation":
            recommend_pb2_grpc.RecommendServiceStub(channel).GetProduct(
                recommend_pb2.GetProductRequest(product_id=key), timeout=10)
        else:
            journey_pb2_grpc.JourneyServiceStub(channel).GetJourney(journey_pb2.GetJourneyRequest(journey_id=key),
                                                                    timeout=10)
    except grpc.RpcError as err:
        if err.code() is grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
            return False
        raise
    return True


@pytest.mark.parametrize("service", ["segmentation", "recommendation", "journeys"])
def test_kill_9_of_a_stateful_service_loses_no_acknowledged_definition(suite: Suite, service: str) -> None:
    try:
        child = suite.child(service)
    except KeyError:
        pytest.skip(f"{service} is not part of the suite yet")
    acked: list[str] = []
    recoveries = []
    for round_ in range(OTHER_ROUNDS):
        old_pid = child.pid
        assert old_pid is not None

        async def put_then_kill(round_: int = round_, old_pid: int = old_pid) -> None:
            async with grpc.aio.insecure_channel(child.address) as channel:
                i = 0
                while True:
                    key = f"crash-{service}-{round_}-{i}"
                    i += 1
                    try:
                        reply = await _put(service, channel, key)  # type: ignore[misc]
                    except grpc.aio.AioRpcError:
                        if i > 20:
                            return  # the kill landed: calls fail now
                        raise
                    if service != "recommendation" or reply.upserted == 1:
                        acked.append(key)
                    if i == 20:
                        os.kill(old_pid, signal.SIGKILL)  # further puts race the kill

        asyncio.run(put_then_kill())
        recoveries.append(supervise_until_serving(suite, service, old_pid))
    with grpc.insecure_channel(child.address) as channel:
        lost = [key for key in acked if not _stored(service, channel, key)]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged definitions lost, e.g. {lost[:5]}"
    FIGURES[f"kill -9 {service}"] = (f"{OTHER_ROUNDS} rounds, {len(acked)} acknowledged definitions: 0 lost; "
                                     "kill -> SERVING " + ", ".join(f"{r:.1f}" for r in recoveries) + " s")
