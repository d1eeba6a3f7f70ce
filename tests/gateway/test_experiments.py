"""Experiments and ranked placements through the real gateway server in front of the in-memory
backends: a placement under an experiment is served with its variant's strategy and k, the
assignments come back in the answer, one EXPOSURE event per answer reaches the profile log
whatever the placement's outcome; a placement with candidates is answered by Rank, and by the
caller's order when Rank fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from services.gateway.experiments import ExposureLog, exposure_event
from tests.gateway.conftest import FakeSuite
from vitrine.v1 import common_pb2, gateway_pb2, profile_pb2, recommend_pb2, segment_pb2

WAIT_S = 10.0  # bound on waiting for the background exposure writer


def experiment(slot_id: str = "for_you", experiment_id: str = "exp-1") -> segment_pb2.Experiment:
    return segment_pb2.Experiment(experiment_id=experiment_id, slot_id=slot_id, variants=[
        segment_pb2.Variant(variant_id="control", weight=1, strategy=recommend_pb2.FOR_YOU),
        segment_pb2.Variant(variant_id="treatment", weight=1, strategy=recommend_pb2.TRENDING, k=3)])


def variant_of(user_id: str) -> str:
    return ["control", "treatment"][sum(user_id.encode()) % 2]


def known(suite: FakeSuite, user_id: str) -> None:
    suite.profile.profiles[user_id] = common_pb2.Profile(user_id=user_id, event_count=3, recently_viewed=["p1"])


async def start_experiment(suite: FakeSuite, *experiments: segment_pb2.Experiment) -> None:
    suite.segmentation.experiments.extend(experiments)
    service = suite.service
    assert service.experiments is not None
    assert await service.experiments.refresh()


async def exposures_written(suite: FakeSuite, count: int) -> list[common_pb2.Event]:
    async with asyncio.timeout(WAIT_S):
        await suite.profile.wait_batched(lambda batched: sum(e.type == common_pb2.EXPOSURE for e in batched) >= count)
    return [e for e in suite.profile.batched if e.type == common_pb2.EXPOSURE]


async def personalize(suite: FakeSuite, user_id: str, **fields: object) -> gateway_pb2.PersonalizeResponse:
    values: dict[str, object] = {"user_id": user_id, "page_type": "home", "session_id": "s1", **fields}
    return await suite.stub.Personalize(gateway_pb2.PersonalizeRequest(**values), timeout=10)  # type: ignore[arg-type]


def users_by_variant() -> dict[str, str]:
    users: dict[str, str] = {}
    i = 0
    while len(users) < 2:
        users.setdefault(variant_of(f"u{i}"), f"u{i}")
        i += 1
    return users


async def test_each_variant_is_served_and_exposed(fake_suite: FakeSuite) -> None:
    await start_experiment(fake_suite, experiment())
    users = users_by_variant()
    for variant, user in users.items():
        known(fake_suite, user)
        reply = await personalize(fake_suite, user)
        assert [(a.experiment_id, a.variant_id, a.slot_id) for a in reply.assignments] == [
            ("exp-1", variant, "for_you")]
        for_you = next(p for p in reply.placements if p.slot_id == "for_you")
        if variant == "treatment":  # the variant's strategy and k
            assert (for_you.strategy_used, len(for_you.items)) == ("TRENDING", 3)
        else:  # the placement's own k (the variant names none)
            assert (for_you.strategy_used, len(for_you.items)) == ("FOR_YOU", 8)
        # The other placement is not under the experiment.
        trending = next(p for p in reply.placements if p.slot_id == "trending")
        assert (trending.strategy_used, len(trending.items)) == ("TRENDING", 8)
    events = await exposures_written(fake_suite, 2)
    by_user = {e.user_id: e for e in events}
    for variant, user in users.items():
        event = by_user[user]
        assert event.event_id.startswith("exp-") and event.session_id == "s1" and event.timestamp_ms > 0
        assert [(x.experiment_id, x.variant_id, x.slot_id) for x in event.exposures] == [("exp-1", variant, "for_you")]


async def test_one_event_carries_every_assignment_served(fake_suite: FakeSuite) -> None:
    await start_experiment(fake_suite, experiment("for_you", "exp-a"), experiment("trending", "exp-b"),
                           experiment("cart_complements", "exp-c"))  # not on a home page
    known(fake_suite, "u1")
    reply = await personalize(fake_suite, "u1")
    assert sorted(a.experiment_id for a in reply.assignments) == ["exp-a", "exp-b"]
    [event] = await exposures_written(fake_suite, 1)
    assert sorted((x.experiment_id, x.slot_id) for x in event.exposures) == [("exp-a", "for_you"),
                                                                            ("exp-b", "trending")]


async def test_exposure_is_recorded_when_the_variants_items_fall_back(fake_suite: FakeSuite) -> None:
    """Intent to treat: a variant whose Recommend failed was still shown to the shopper."""
    await start_experiment(fake_suite, experiment())
    users = users_by_variant()
    fake_suite.recommendation.failing_strategies.add(recommend_pb2.TRENDING)  # the treatment's strategy
    known(fake_suite, users["treatment"])
    reply = await personalize(fake_suite, users["treatment"])
    for_you = next(p for p in reply.placements if p.slot_id == "for_you")
    assert for_you.fallback and reply.assignments[0].variant_id == "treatment"
    [event] = await exposures_written(fake_suite, 1)
    assert event.exposures[0].variant_id == "treatment"


async def test_a_preview_records_no_exposure(fake_suite: FakeSuite) -> None:
    await start_experiment(fake_suite, experiment())
    known(fake_suite, "u1")
    known(fake_suite, "u2")
    reply = await personalize(fake_suite, "u1", preview=True)
    assert reply.assignments  # the answer is as usual
    await personalize(fake_suite, "u2")
    events = await exposures_written(fake_suite, 1)
    assert [e.user_id for e in events] == ["u2"]


async def test_no_experiment_means_no_wait_and_no_exposure(fake_suite: FakeSuite) -> None:
    known(fake_suite, "u1")
    reply = await personalize(fake_suite, "u1")
    assert not reply.assignments and reply.personalized
    exposures = fake_suite.service.exposures
    assert exposures is not None and exposures.pending == 0 and exposures.written == 0


async def test_an_experiment_the_gateway_did_not_know_is_learned(fake_suite: FakeSuite) -> None:
    """Started after the last refresh: the first answer serves the placement's own strategy and
    claims no assignment; from the next one the variant is served."""
    fake_suite.segmentation.experiments.append(experiment())
    users = users_by_variant()
    known(fake_suite, users["treatment"])
    first = await personalize(fake_suite, users["treatment"])
    assert not first.assignments
    assert next(p for p in first.placements if p.slot_id == "for_you").strategy_used == "FOR_YOU"
    second = await personalize(fake_suite, users["treatment"])
    assert [a.variant_id for a in second.assignments] == ["treatment"]
    assert next(p for p in second.placements if p.slot_id == "for_you").strategy_used == "TRENDING"


async def test_segmentation_down_serves_the_placements_own_strategy(fake_suite: FakeSuite) -> None:
    await start_experiment(fake_suite, experiment())
    users = users_by_variant()
    known(fake_suite, users["treatment"])
    fake_suite.segmentation.faults.code = grpc.StatusCode.UNAVAILABLE
    reply = await personalize(fake_suite, users["treatment"])
    assert not reply.assignments
    assert "segmentation_unavailable" in reply.fallback_reason
    assert next(p for p in reply.placements if p.slot_id == "for_you").strategy_used == "FOR_YOU"


async def test_no_consent_enters_no_experiment(fake_suite: FakeSuite) -> None:
    await start_experiment(fake_suite, experiment())
    fake_suite.profile.profiles["u1"] = common_pb2.Profile(
        user_id="u1", event_count=3, consent=common_pb2.Consent(personalization=False, updated_ms=1))
    reply = await personalize(fake_suite, "u1")
    assert reply.fallback_reason.startswith("no_consent") and not reply.assignments


async def test_an_unknown_shopper_is_assigned_by_the_id_it_sent(fake_suite: FakeSuite) -> None:
    await start_experiment(fake_suite, experiment())
    reply = await personalize(fake_suite, "visitor-9")
    assert [a.variant_id for a in reply.assignments] == [variant_of("visitor-9")]
    [event] = await exposures_written(fake_suite, 1)
    assert event.user_id == "visitor-9"


# --- the exposure log itself ------------------------------------------------------------------


class Router:
    """TrackBatch stand-in: `fail` decides per call whether the batch is refused."""

    def __init__(self, fail: Callable[[int], bool] = lambda call: False) -> None:
        self.fail = fail
        self.calls = 0
        self.stored: dict[str, common_pb2.Event] = {}
        self.release = asyncio.Event()
        self.release.set()
        self.called = asyncio.Event()

    async def track_batch(self, request: profile_pb2.TrackBatchRequest, seconds: float) -> profile_pb2.TrackSummary:
        self.calls += 1
        self.called.set()
        await self.release.wait()
        if self.fail(self.calls):
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "down")
        summary = profile_pb2.TrackSummary()
        for event in request.events:
            if event.event_id in self.stored:
                summary.duplicates += 1
            else:
                self.stored[event.event_id] = event
                summary.accepted += 1
        return summary


def exposure(variant: str, n: int) -> common_pb2.Event:
    return exposure_event(f"u{n}", "s", common_pb2.Context(), [
        segment_pb2.Assignment(experiment_id="e", variant_id=variant, slot_id="for_you")])


async def test_a_failed_batch_is_resent() -> None:
    router = Router(fail=lambda call: call == 1)
    log = ExposureLog(router, linger=0, retry_pause=0)
    log.start()
    for n in range(5):
        assert log.offer(exposure("a", n))
    await log.stop()
    assert len(router.stored) == 5 and log.written == 5 and log.dropped == 0 and router.calls == 2


async def test_a_full_queue_drops_without_regard_to_the_variant() -> None:
    """The writer is held; the queue takes the first `size` offers whatever they carry and drops
    every later one: the variants' shares of what is kept are their shares of what was offered."""
    router = Router()
    router.release.clear()
    size = 100
    log = ExposureLog(router, queue_size=size, batch_size=10, linger=0, retry_pause=0)
    log.start()
    offered = {"a": 0, "b": 0}
    kept = {"a": 0, "b": 0}
    first = exposure("a", -1)
    log.offer(first)  # taken by the writer, which then waits on the held router
    await asyncio.wait_for(router.called.wait(), WAIT_S)
    for n in range(1000):
        variant = "ab"[n % 2]
        offered[variant] += 1
        kept[variant] += log.offer(exposure(variant, n))
    assert kept == {"a": size // 2, "b": size // 2}
    assert log.dropped == 1000 - size
    router.release.set()
    await log.stop()
    assert len(router.stored) == size + 1


async def test_stop_writes_what_is_queued() -> None:
    router = Router()
    log = ExposureLog(router, linger=0.5)
    log.start()
    for n in range(3):
        log.offer(exposure("a", n))
    await log.stop()
    assert len(router.stored) == 3


# --- ranked placements ------------------------------------------------------------------------


def ranked(candidates: list[str], **fields: object) -> gateway_pb2.Placement:
    return gateway_pb2.Placement(slot_id="results", candidate_product_ids=candidates, **fields)  # type: ignore[arg-type]


async def test_a_placement_with_candidates_is_answered_by_rank(fake_suite: FakeSuite) -> None:
    known(fake_suite, "u1")
    candidates = [f"c{i}" for i in range(20)]
    constraints = recommend_pb2.Constraints(exclude_product_ids=["c19"])
    reply = await personalize(fake_suite, "u1", page_type="search", placements=[
        ranked(candidates, k=5, constraints=constraints),
        gateway_pb2.Placement(slot_id="for_you", strategy=recommend_pb2.FOR_YOU)])
    results, for_you = reply.placements
    assert (results.slot_id, results.strategy_used, results.fallback) == ("results", "RANK", False)
    assert [i.product_id for i in results.items] == ["c18", "c17", "c16", "c15", "c14"]
    assert for_you.strategy_used == "FOR_YOU" and reply.personalized and not reply.fallback_reason
    [call] = fake_suite.recommendation.ranks
    assert list(call.product_ids) == candidates and call.k == 5
    assert list(call.user.recent_product_ids) == ["p1"]  # the shopper's signals
    assert list(call.constraints.exclude_product_ids) == ["c19"]


async def test_rank_keeps_every_candidate_when_k_is_zero(fake_suite: FakeSuite) -> None:
    candidates = [f"c{i}" for i in range(30)]
    reply = await personalize(fake_suite, "nobody", page_type="category", placements=[ranked(candidates)])
    assert len(reply.placements[0].items) == 30
    assert not fake_suite.recommendation.ranks[0].HasField("user")  # an unknown shopper: no signals


@pytest.mark.parametrize("fault", ["error", "late"])
async def test_rank_down_keeps_the_callers_order(fake_suite: FakeSuite, fault: str) -> None:
    known(fake_suite, "u1")
    if fault == "error":
        fake_suite.recommendation.rank_faults.code = grpc.StatusCode.UNAVAILABLE
    else:
        fake_suite.recommendation.rank_faults.delay = 3.0
    candidates = ["c1", "c2", "c2", "c3", "c4"]
    reply = await personalize(fake_suite, "u1", page_type="search", deadline_ms=300, placements=[
        ranked(candidates, k=3, constraints=recommend_pb2.Constraints(exclude_product_ids=["c1"]))])
    [results] = reply.placements
    assert (results.strategy_used, results.fallback) == ("CALLER_ORDER", True)
    assert [i.product_id for i in results.items] == ["c2", "c3", "c4"]
    assert "recommendation_unavailable" in reply.fallback_reason


async def test_a_ranked_placement_needs_no_strategy_but_bounded_candidates(fake_suite: FakeSuite) -> None:
    from services.gateway.config import MAX_CANDIDATES
    from tests.support import assert_status

    too_many = [f"c{i}" for i in range(MAX_CANDIDATES + 1)]
    err = await assert_status(personalize(fake_suite, "u1", placements=[ranked(too_many)]),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert "candidate_product_ids" in (err.details() or "")
    await assert_status(personalize(fake_suite, "u1", placements=[gateway_pb2.Placement(slot_id="x")]),
                        grpc.StatusCode.INVALID_ARGUMENT)


async def test_ranked_and_listed_placements_share_one_batch(fake_suite: FakeSuite) -> None:
    known(fake_suite, "u1")
    batches = fake_suite.recommendation.batches
    reply = await personalize(fake_suite, "u1", page_type="search", placements=[
        ranked(["c1", "c2", "c3"]), gateway_pb2.Placement(slot_id="for_you", strategy=recommend_pb2.FOR_YOU)])
    assert [p.strategy_used for p in reply.placements] == ["RANK", "FOR_YOU"]
    assert [i.product_id for i in reply.placements[0].items] == ["c3", "c2", "c1"]
    assert fake_suite.recommendation.batches == batches + 1 and len(fake_suite.recommendation.ranks) == 1


async def test_a_service_without_batched_ranks_gets_one_rank_call(fake_suite: FakeSuite) -> None:
    known(fake_suite, "u1")
    fake_suite.recommendation.batch_ranks = False
    reply = await personalize(fake_suite, "u1", page_type="search", placements=[
        ranked(["c1", "c2"]), gateway_pb2.Placement(slot_id="for_you", strategy=recommend_pb2.FOR_YOU)])
    assert [p.strategy_used for p in reply.placements] == ["RANK", "FOR_YOU"] and not reply.fallback_reason
    assert len(fake_suite.recommendation.ranks) == 1  # the separate Rank call


async def test_a_held_page_still_ranks_at_once(fake_suite: FakeSuite) -> None:
    await start_experiment(fake_suite, experiment())
    users = users_by_variant()
    known(fake_suite, users["treatment"])
    reply = await personalize(fake_suite, users["treatment"], page_type="search", placements=[
        gateway_pb2.Placement(slot_id="for_you", strategy=recommend_pb2.FOR_YOU), ranked(["c1", "c2"])])
    assert [(p.slot_id, p.strategy_used) for p in reply.placements] == [("for_you", "TRENDING"), ("results", "RANK")]
    assert [a.variant_id for a in reply.assignments] == ["treatment"]
