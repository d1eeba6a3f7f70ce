"""In-memory backends with injectable faults (delay, error status): the gateway's fallback tests
and the gateway-only load run (benchmarks/loadtest/gateway_only.py) serve them in place of the
real profile, segmentation and recommendation services.

They implement just enough of each backend's contract to be recognisable in answers;
composition, routing, sharding and recovery are also tested against the real services.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

import grpc

from vitrine.v1 import (
    common_pb2,
    profile_pb2,
    profile_pb2_grpc,
    recommend_pb2,
    recommend_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
)


@dataclasses.dataclass
class Faults:
    delay: float = 0.0
    code: grpc.StatusCode | None = None
    message: str = "injected failure"
    calls: int = 0

    async def apply(self, context: grpc.aio.ServicerContext) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.code is not None:
            await context.abort(self.code, self.message)

    def clear(self) -> None:
        self.delay, self.code = 0.0, None


class _Base:
    service_names: Sequence[str] = ()

    def __init__(self) -> None:
        self.faults = Faults()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class FakeProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    def __init__(self, owner: FakeProfile) -> None:
        self.owner = owner

    async def Track(self, request, context):
        await self.owner.faults.apply(context)
        event = request.event
        if not event.event_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event.event_id is required")
        profile = self.owner.profiles.setdefault(event.user_id, common_pb2.Profile(user_id=event.user_id))
        profile.event_count += 1
        if event.product_id:
            profile.recently_viewed.insert(0, event.product_id)
        return profile_pb2.TrackResponse(applied=True, user_id=event.user_id)

    async def TrackBatch(self, request, context):
        await self.owner.faults.apply(context)
        summary = profile_pb2.TrackSummary()
        for index, event in enumerate(request.events):
            if not event.event_id:
                summary.rejected += 1
                summary.errors.append(f"event {index} (): event.event_id is required")
            elif event.event_id in self.owner.seen_event_ids:
                summary.duplicates += 1
            else:
                self.owner.seen_event_ids.add(event.event_id)
                self.owner.batched.append(event)
                summary.accepted += 1
        async with self.owner.batch_changed:
            self.owner.batch_changed.notify_all()
        return summary

    async def ResolveAlias(self, request, context):
        await self.owner.faults.apply(context)
        return profile_pb2.ResolveAliasResponse(target_id=self.owner.aliases.get(request.user_id, ""))

    async def GetProfile(self, request, context):
        await self.owner.faults.apply(context)
        profile = self.owner.profiles.get(request.user_id)
        if profile is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no profile for {request.user_id}")
        return profile

    async def SetConsent(self, request, context):
        await self.owner.faults.apply(context)
        profile = self.owner.profiles.setdefault(request.user_id, common_pb2.Profile(user_id=request.user_id))
        profile.consent.CopyFrom(request.consent)
        return profile


class FakeProfile(_Base):
    name = "fake-profile"
    service_names = ("vitrine.v1.ProfileService",)

    def __init__(self) -> None:
        super().__init__()
        self.profiles: dict[str, common_pb2.Profile] = {}
        self.batched: list[common_pb2.Event] = []  # events applied through TrackBatch
        self.seen_event_ids: set[str] = set()
        self.aliases: dict[str, str] = {}  # alias -> target, for ResolveAlias
        self.batch_changed = asyncio.Condition()  # notified after every TrackBatch

    async def wait_batched(self, predicate: Callable[[list[common_pb2.Event]], bool]) -> None:
        """Until `predicate(batched)` holds (the caller bounds it with asyncio.timeout)."""
        async with self.batch_changed:
            await self.batch_changed.wait_for(lambda: predicate(self.batched))

    def add_to_server(self, server: grpc.aio.Server) -> None:
        servicer = FakeProfileServicer(self)  # type: ignore[abstract]  # a fake: unimplemented RPCs answer UNIMPLEMENTED
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(servicer, server)


class FakeSegmentationServicer(segment_pb2_grpc.SegmentServiceServicer):
    def __init__(self, owner: FakeSegmentation) -> None:
        self.owner = owner

    async def Evaluate(self, request, context):
        await self.owner.faults.apply(context)
        self.owner.seen.append(request)
        known = bool(request.profile.event_count)
        segments = ["returning_visitor" if known else "new_visitor", "evaluated"]
        offer = segment_pb2.Offer(offer_id="welcome", title="Welcome", segment_ids=segments[:1])
        return segment_pb2.EvaluateResponse(segment_ids=segments, offers=[offer],
                                            assignments=self.owner.assign(request.profile.user_id))

    async def ListExperiments(self, request, context):
        await self.owner.list_faults.apply(context)
        return segment_pb2.ListExperimentsResponse(experiments=self.owner.experiments)


class FakeSegmentation(_Base):
    name = "fake-segmentation"
    service_names = ("vitrine.v1.SegmentService",)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[segment_pb2.EvaluateRequest] = []
        self.experiments: list[segment_pb2.Experiment] = []  # running experiments (all of them enter everyone)
        self.list_faults = Faults()

    def assign(self, user_id: str) -> list[segment_pb2.Assignment]:
        """A deterministic stand-in for the real assignment: the variant by a checksum of the id."""
        if not user_id:
            return []
        chosen = []
        for experiment in self.experiments:
            variant = experiment.variants[sum(user_id.encode()) % len(experiment.variants)]
            chosen.append(segment_pb2.Assignment(experiment_id=experiment.experiment_id, variant_id=variant.variant_id,
                                                 slot_id=experiment.slot_id, strategy=variant.strategy, k=variant.k))
        return chosen

    def add_to_server(self, server: grpc.aio.Server) -> None:
        servicer = FakeSegmentationServicer(self)  # type: ignore[abstract]  # a fake: unimplemented RPCs answer UNIMPLEMENTED
        segment_pb2_grpc.add_SegmentServiceServicer_to_server(servicer, server)


TRENDING_IDS = [f"t{i}" for i in range(30)]


class FakeRecommendationServicer(recommend_pb2_grpc.RecommendServiceServicer):
    def __init__(self, owner: FakeRecommendation) -> None:
        self.owner = owner

    async def Recommend(self, request, context):
        self.owner.requests.append(request)
        if request.strategy == recommend_pb2.TRENDING and request.k == 100:
            await self.owner.trending_faults.apply(context)  # the gateway's background refresh
            items = [recommend_pb2.ScoredProduct(product_id=p, category="shoes" if i % 2 else "bags",
                                                 price=10.0 + i, score=1.0 / (i + 1))
                     for i, p in enumerate(TRENDING_IDS)]
            return recommend_pb2.RecommendResponse(items=items, strategy_used="TRENDING")
        await self.owner.faults.apply(context)
        if request.strategy in self.owner.failing_strategies:
            await context.abort(grpc.StatusCode.INTERNAL, "injected failure of this strategy")
        return self.owner.answer(request)

    async def RecommendBatch(self, request, context):
        if not self.owner.batch_implemented:  # an older recommendation service
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        self.owner.batches += 1
        self.owner.requests.extend(request.requests)
        await self.owner.faults.apply(context)
        results = []
        for item in request.requests:
            if item.strategy in self.owner.failing_strategies:
                results.append(recommend_pb2.RecommendResult(code=grpc.StatusCode.INTERNAL.value[0],
                                                             error="injected failure of this strategy"))
            else:
                results.append(recommend_pb2.RecommendResult(response=self.owner.answer(item)))
        rank_results = []
        if self.owner.batch_ranks:  # else: a service from before RecommendBatch.ranks (ignores them)
            for rank in request.ranks:
                self.owner.ranks.append(rank)
                rank_results.append(recommend_pb2.RecommendResult(response=self.owner.ranked(rank)))
        return recommend_pb2.RecommendBatchResponse(results=results, rank_results=rank_results)

    async def Rank(self, request, context):
        self.owner.ranks.append(request)
        await self.owner.rank_faults.apply(context)
        return self.owner.ranked(request)

    async def Observe(self, request_iterator, context):
        events = [event async for event in request_iterator]
        self.owner.observe_calls += 1
        await self.owner.observe_faults.apply(context)
        self.owner.observed.extend(events)
        return recommend_pb2.ObserveSummary(observed=len(events))


class FakeRecommendation(_Base):
    name = "fake-recommendation"
    service_names = ("vitrine.v1.RecommendService",)

    def __init__(self) -> None:
        super().__init__()
        self.trending_faults = Faults()
        self.observe_faults = Faults()
        self.rank_faults = Faults()
        self.batch_ranks = True  # RecommendBatch answers its `ranks` (False: an older service)
        self.ranks: list[recommend_pb2.RankRequest] = []
        self.requests: list[recommend_pb2.RecommendRequest] = []
        self.observed: list[common_pb2.Event] = []
        self.observe_calls = 0
        self.batch_implemented = True
        self.batches = 0  # RecommendBatch calls answered
        self.failing_strategies: set[int] = set()  # placements of these strategies fail on their own

    @staticmethod
    def ranked(request: recommend_pb2.RankRequest) -> recommend_pb2.RecommendResponse:
        excluded = set(request.constraints.exclude_product_ids)
        ids = [p for p in reversed(request.product_ids) if p not in excluded]  # recognisably not the caller's order
        if request.k:
            ids = ids[:request.k]
        items = [recommend_pb2.ScoredProduct(product_id=p, score=1.0) for p in ids]
        return recommend_pb2.RecommendResponse(items=items, strategy_used="RANK", model_version="fake-1")

    @staticmethod
    def answer(request: recommend_pb2.RecommendRequest) -> recommend_pb2.RecommendResponse:
        name = recommend_pb2.Strategy.Name(request.strategy)
        items = [recommend_pb2.ScoredProduct(product_id=f"{name.lower()}-{i}", score=1.0)
                 for i in range(request.k)]
        return recommend_pb2.RecommendResponse(items=items, strategy_used=name, model_version="fake-1")

    def add_to_server(self, server: grpc.aio.Server) -> None:
        servicer = FakeRecommendationServicer(self)  # type: ignore[abstract]  # a fake: unimplemented RPCs answer UNIMPLEMENTED
        recommend_pb2_grpc.add_RecommendServiceServicer_to_server(servicer, server)
