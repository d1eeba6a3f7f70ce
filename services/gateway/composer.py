"""Personalize and Track as plain async code over injected backend clients.

Personalize: one profile read (a share of the budget), then segments and every
placement's Recommend concurrently in what is left. Each call carries its own
seconds; whatever misses it or fails is replaced by its fallback, never an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from services.common.logs import LogOnce
from services.gateway import config as limits
from services.gateway.backends import ProfileBackend, RecommendBackend, SegmentBackend
from services.gateway.defaults import ANCHORED, PERSONAL, Slot, slots_for
from services.gateway.experiments import ExperimentSlots, ExposureLog, exposure_event
from services.gateway.fallback import FALLBACK_STRATEGY, TrendingCache, context_segments
from services.gateway.metrics import (
    ASSIGNMENTS_SERVED,
    ASSIGNMENTS_UNSERVED,
    BACKEND_LATENCY,
    FALLBACKS,
    UNEXPECTED_ERRORS,
)
from vitrine.v1 import common_pb2, gateway_pb2, profile_pb2, recommend_pb2, segment_pb2

log = logging.getLogger(__name__)

UNKNOWN_USER = "unknown_user"
NO_CONSENT = "no_consent"
PROFILE_UNAVAILABLE = "profile_unavailable"
SEGMENTATION_UNAVAILABLE = "segmentation_unavailable"
RECOMMENDATION_UNAVAILABLE = "recommendation_unavailable"

# What a backend call may raise: status errors and timeouts, and anything unexpected from the
# client stack (logged), which must still degrade one part of the answer, not fail it.
_BACKEND_ERRORS = (Exception,)


_logged = LogOnce()


def _unexpected(err: BaseException, backend: str) -> None:
    """An error that is neither a status nor a timeout is counted, and logged once per kind."""
    if isinstance(err, grpc.aio.AioRpcError | TimeoutError):
        return
    kind = type(err).__name__
    UNEXPECTED_ERRORS.labels(backend, kind).inc()
    if _logged.first((backend, kind)):
        log.warning("unexpected %s calling %s: the part fell back (each one is counted in "
                    "vitrine_gateway_unexpected_errors_total; this is logged once)", kind, backend, exc_info=err)


# One placement's answer: the result, whether it came from the backend, the model version.
Placed = tuple[gateway_pb2.PlacementResult, bool, str]
# Segments, offers, whether Evaluate answered, and the shopper's experiment assignments.
Segmented = tuple[list[str], list[segment_pb2.Offer], bool, list[segment_pb2.Assignment]]

# A ranked placement whose Rank failed keeps the caller's own order.
CALLER_ORDER = "CALLER_ORDER"

_latency_children: dict[tuple[str, str], Any] = {}
_fallback_children: dict[str, Any] = {}


def _observe(backend: str, started: float, ok: bool, err: BaseException | None = None) -> None:
    outcome = "ok" if ok else "error"
    if isinstance(err, TimeoutError) or (
            isinstance(err, grpc.aio.AioRpcError) and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
        outcome = "timeout"
    child = _latency_children.get((backend, outcome))
    if child is None:  # label lookups take a lock: do them once per label set
        child = _latency_children[(backend, outcome)] = BACKEND_LATENCY.labels(backend, outcome)
    child.observe(time.perf_counter() - started)


def _count_fallback(reason: str) -> None:
    child = _fallback_children.get(reason)
    if child is None:
        child = _fallback_children[reason] = FALLBACKS.labels(reason)
    child.inc()


def consent_withdrawn(profile: common_pb2.Profile) -> bool:
    """Personalization consent explicitly withdrawn (never set = granted, as on a first visit)."""
    consent = profile.consent
    return profile.HasField("consent") and consent.updated_ms > 0 and not consent.personalization


def user_signals(profile: common_pb2.Profile) -> recommend_pb2.UserSignals:
    """What Recommend needs to know about the shopper, taken from the profile."""
    affinities: Mapping[str, float] = profile.category_affinity
    if len(affinities) > limits.MAX_SIGNAL_AFFINITIES:
        top = sorted(affinities.items(), key=lambda kv: kv[1], reverse=True)[:limits.MAX_SIGNAL_AFFINITIES]
        affinities = dict(top)
    # Typical spend: per order when the shopper has ordered, per visit otherwise; the larger one
    # when both are known, so a shopper who buys one expensive item per order is not under-served.
    budget = max(profile.avg_order_value, profile.avg_session_spend, 0.0)
    return recommend_pb2.UserSignals(
        user_id=profile.user_id,
        recent_product_ids=profile.recently_viewed[:limits.MAX_SIGNAL_RECENT],
        # views per recent product (the ranker's re-view signal); sent only when parallel, as Recommend checks
        recent_view_counts=(profile.recently_viewed_counts[:limits.MAX_SIGNAL_RECENT]
                            if len(profile.recently_viewed_counts) == len(profile.recently_viewed) else []),
        purchased_product_ids=profile.purchased_product_ids[:limits.MAX_SIGNAL_PURCHASED],
        category_affinity=affinities,
        budget=budget,
    )


class Composer:
    """Personalize and Track; backends are injected (stubs, or anything with the same calls: backends.py)."""

    def __init__(self, router: ProfileBackend, segments: SegmentBackend, recommend: RecommendBackend,
                 trending: TrendingCache, *, deadline_ms: int = 50,
                 experiments: ExperimentSlots | None = None, exposures: ExposureLog | None = None) -> None:
        self.router = router
        self.segments = segments
        self.recommend = recommend
        self.trending = trending
        self.deadline_ms = deadline_ms
        self.experiments = experiments
        self.exposures = exposures
        self._batch_retry_at = 0.0  # loop time from which RecommendBatch is tried (after UNIMPLEMENTED)

    # --- Track ---------------------------------------------------------------------------

    async def track(self, request: profile_pb2.TrackRequest) -> profile_pb2.TrackResponse:
        """Durable in the profile shard; its error is the caller's. Nothing else is on the write
        path: recommendation signals, journeys and experiment results follow the profile's log."""
        return await self.router.track(request)

    async def track_batch(self, request: profile_pb2.TrackBatchRequest) -> profile_pb2.TrackSummary:
        """Each event durable in its shard (partial failures counted in the summary)."""
        return await self.router.track_batch(request)

    # --- Personalize -----------------------------------------------------------------------

    async def personalize(self, request: gateway_pb2.PersonalizeRequest) -> gateway_pb2.PersonalizeResponse:
        slots = slots_for(request)  # InvalidArgument for a malformed request, before any call
        loop = asyncio.get_running_loop()
        budget = (request.deadline_ms or self.deadline_ms) / 1000.0
        deadline = loop.time() + budget - limits.ASSEMBLY_RESERVE_MS / 1000.0
        reasons: list[str] = []

        profile: common_pb2.Profile | None = None
        if request.user_id:
            started = time.perf_counter()
            try:
                profile = await self.router.get_profile(request.user_id, budget * limits.PROFILE_BUDGET_SHARE)
            except _BACKEND_ERRORS as err:
                _unexpected(err, "profile")
                _observe("profile", started, False, err)
                reasons.append(PROFILE_UNAVAILABLE)
            else:
                _observe("profile", started, True)
                if profile is None:
                    reasons.append(UNKNOWN_USER)
                elif consent_withdrawn(profile):
                    profile = None
                    reasons.append(NO_CONSENT)
        else:
            reasons.append(UNKNOWN_USER)
        personal = profile is not None
        unknown = bool(reasons) and reasons[0] == UNKNOWN_USER

        signals = user_signals(profile) if profile is not None else None
        remaining = max(deadline - loop.time(), 0.001)
        listed = [i for i, slot in enumerate(slots) if not slot.candidates]
        ranked = [i for i, slot in enumerate(slots) if slot.candidates]
        # A placement that a running experiment may hold waits for Evaluate's assignment; the
        # others (and every ranked placement) are asked for at once, beside Evaluate.
        evaluated = profile is not None or unknown
        held = (evaluated and bool(request.user_id) and self.experiments is not None
                and any(self.experiments.holds(slots[i].slot_id) for i in listed))
        seconds = remaining * limits.EVALUATE_SHARE_WHEN_HELD if held else remaining
        segmenting = asyncio.ensure_future(self._segments(request, profile, unknown, seconds))
        served: list[segment_pb2.Assignment] = []

        async def placements_of_the_page() -> list[Placed]:
            """Listed then ranked placements: one RecommendBatch for all, unless the listed ones
            wait for their variants (then the ranked ones, never under a variant, go at once)."""
            chosen = [slots[i] for i in listed]
            if not held:
                return await self._placements(request, chosen, signals, deadline, [slots[i] for i in ranked])
            ranking = asyncio.gather(*(self._ranked(request, slots[i], signals, deadline) for i in ranked))
            chosen = self._under_variants(chosen, (await segmenting)[3], served)
            listed_placed = await self._placements(request, chosen, signals, deadline)
            return [*listed_placed, *await ranking]

        (segment_ids, offers, segments_ok, assignments), placed = await asyncio.gather(
            segmenting, placements_of_the_page())
        self._note_unserved(request, slots, assignments, served)
        by_index = dict(zip([*listed, *ranked], placed, strict=True))
        placements = [by_index[i] for i in range(len(slots))]

        response = gateway_pb2.PersonalizeResponse(segment_ids=segment_ids, offers=offers, assignments=served)
        placements_ok = 0
        for result, ok, model_version in placements:
            response.placements.append(result)
            placements_ok += ok
            if model_version and not response.model_version:
                response.model_version = model_version
        if not segments_ok:
            reasons.append(SEGMENTATION_UNAVAILABLE)
        if placements_ok < len(placements):
            reasons.append(RECOMMENDATION_UNAVAILABLE)
        response.personalized = personal and (segments_ok or placements_ok > 0)
        if reasons:
            response.fallback_reason = ",".join(reasons)
            for reason in reasons:
                _count_fallback(reason)
        if served and self.exposures is not None and not request.preview:
            # Recorded for every variant served, whatever its placement's outcome (a variant whose
            # items fell back is still exposed), so exposure loss cannot depend on the variant.
            user_id = profile.user_id if profile is not None and profile.user_id else request.user_id
            self.exposures.offer(exposure_event(user_id, request.session_id, request.context, served))
        return response

    @staticmethod
    def _under_variants(slots: list[Slot], assignments: list[segment_pb2.Assignment],
                        served: list[segment_pb2.Assignment]) -> list[Slot]:
        """The placements with each assigned variant's strategy and k (0 = the placement's own);
        the assignments applied are appended to `served`."""
        by_slot: dict[str, segment_pb2.Assignment] = {}
        for each in assignments:
            by_slot.setdefault(each.slot_id, each)  # one experiment per slot: the first
        chosen = []
        for slot in slots:
            assignment = by_slot.get(slot.slot_id)
            if assignment is None:
                chosen.append(slot)
                continue
            strategy = assignment.strategy or slot.strategy
            k = min(assignment.k, limits.MAX_K) if assignment.k > 0 else slot.k
            chosen.append(Slot(slot.slot_id, strategy, k, slot.constraints))
            served.append(assignment)
            ASSIGNMENTS_SERVED.inc()
        return chosen

    def _note_unserved(self, request: gateway_pb2.PersonalizeRequest, slots: list[Slot],
                       assignments: list[segment_pb2.Assignment], served: list[segment_pb2.Assignment]) -> None:
        """Count assignments that this answer did not serve, and learn the slots of experiments the
        gateway did not know yet (so the next request with that slot waits for its variant)."""
        if len(assignments) == len(served):
            return
        if self.experiments is not None:
            self.experiments.learn(a.slot_id for a in assignments if a.slot_id)
        on_page = {slot.slot_id: bool(slot.candidates) for slot in slots}
        done = {a.experiment_id for a in served}
        for assignment in assignments:
            if assignment.experiment_id in done:
                continue
            if assignment.slot_id not in on_page:
                reason = "not_on_page"
            elif not request.user_id:
                reason = "no_user_id"
            elif on_page[assignment.slot_id]:
                reason = "ranked_placement"
            else:
                reason = "slot_not_held"
            ASSIGNMENTS_UNSERVED.labels(reason).inc()

    async def _segments(self, request: gateway_pb2.PersonalizeRequest, profile: common_pb2.Profile | None,
                        unknown: bool, seconds: float) -> Segmented:
        """Segments and offers; for a shopper without a usable profile, the context-only built-ins
        (an unknown shopper is a new visitor and still gets the store's offers for new visitors)."""
        if profile is None and not unknown:
            # No consent, or the profile is unavailable: nothing personal, nothing to ask.
            return context_segments(request.context, new_visitor=False), [], True, []
        evaluate = segment_pb2.EvaluateRequest(context=request.context)
        if profile is not None:
            evaluate.profile.CopyFrom(profile)
        else:
            evaluate.profile.user_id = request.user_id
        started = time.perf_counter()
        try:
            reply = await self.segments.Evaluate(evaluate, timeout=seconds)
        except _BACKEND_ERRORS as err:
            _unexpected(err, "segmentation")
            _observe("segmentation", started, False, err)
            return context_segments(request.context, new_visitor=profile is None), [], False, []
        _observe("segmentation", started, True)
        return list(reply.segment_ids), list(reply.offers), True, list(reply.assignments)

    def _recommend_request(self, request: gateway_pb2.PersonalizeRequest, slot: Slot,
                           signals: recommend_pb2.UserSignals | None) -> recommend_pb2.RecommendRequest:
        strategy = slot.strategy
        if signals is None and strategy in PERSONAL:
            strategy = recommend_pb2.TRENDING
        call = recommend_pb2.RecommendRequest(
            strategy=strategy, k=slot.k, constraints=slot.constraints, context=request.context,
            cart_product_ids=request.cart_product_ids, user=signals,
        )
        if strategy in ANCHORED or request.product_id:
            call.product_id = request.product_id
        return call

    def _fallback(self, request: gateway_pb2.PersonalizeRequest, slot: Slot) -> Placed:
        """Warm trending items for a placement whose Recommend was late or failed."""
        exclude = [request.product_id] if request.product_id else []
        exclude.extend(request.cart_product_ids)
        items = self.trending.items(slot.k, slot.constraints, exclude)
        return gateway_pb2.PlacementResult(slot_id=slot.slot_id, items=items, strategy_used=FALLBACK_STRATEGY,
                                           fallback=True), False, ""

    async def _placements(self, request: gateway_pb2.PersonalizeRequest, slots: list[Slot],
                          signals: recommend_pb2.UserSignals | None, deadline: float,
                          ranked: Sequence[Slot] = ()) -> list[Placed]:
        """Every placement's items, `slots` then `ranked`: one RecommendBatch for several (one hop
        instead of one per placement; the ranked ones in its `ranks`), one Recommend or Rank for a
        single one; each placement falls back on its own."""
        loop = asyncio.get_running_loop()
        calls = [self._recommend_request(request, slot, signals) for slot in slots]
        ranks = [self._rank_request(request, slot, signals) for slot in ranked]
        if len(calls) + len(ranks) > 1 and loop.time() >= self._batch_retry_at:
            started = time.perf_counter()
            failed = [self._fallback(request, slot) for slot in slots] + [self._caller_order(s) for s in ranked]
            try:
                reply = await self.recommend.RecommendBatch(
                    recommend_pb2.RecommendBatchRequest(requests=calls, ranks=ranks),
                    timeout=max(deadline - loop.time(), 0.001))
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                    _observe("recommendation", started, False, err)
                    return failed
                log.warning("the recommendation service has no RecommendBatch: one Recommend per placement "
                            "for the next %.0f s", limits.RECOMMEND_BATCH_RETRY_S)
                self._batch_retry_at = loop.time() + limits.RECOMMEND_BATCH_RETRY_S
            except _BACKEND_ERRORS as err:
                _unexpected(err, "recommendation")
                _observe("recommendation", started, False, err)
                return failed
            else:
                _observe("recommendation", started, True)
                if len(reply.results) != len(calls):
                    log.warning("RecommendBatch answered %d results for %d requests", len(reply.results),
                                len(calls))
                    return failed
                placed = [self._placed(slot, result.response) if result.code == 0 else self._fallback(request, slot)
                          for slot, result in zip(slots, reply.results, strict=True)]
                if len(reply.rank_results) != len(ranks):
                    # A recommendation service from before RecommendBatch.ranks: one Rank each.
                    return [*placed, *await asyncio.gather(*(self._ranked(request, s, signals, deadline)
                                                             for s in ranked))]
                return [*placed, *(self._placed(slot, result.response) if result.code == 0
                                   else self._caller_order(slot)
                                   for slot, result in zip(ranked, reply.rank_results, strict=True))]
        seconds = max(deadline - loop.time(), 0.001)
        return list(await asyncio.gather(
            *(self._placement(request, slot, call, seconds) for slot, call in zip(slots, calls, strict=True)),
            *(self._ranked(request, slot, signals, deadline) for slot in ranked)))

    @staticmethod
    def _placed(slot: Slot, reply: recommend_pb2.RecommendResponse) -> Placed:
        return gateway_pb2.PlacementResult(slot_id=slot.slot_id, items=reply.items, strategy_used=reply.strategy_used,
                                           fallback=reply.fallback), True, reply.model_version

    async def _placement(self, request: gateway_pb2.PersonalizeRequest, slot: Slot,
                         call: recommend_pb2.RecommendRequest, seconds: float) -> Placed:
        """One placement's items: Recommend, or warm trending items when it is late or fails."""
        started = time.perf_counter()
        try:
            reply = await self.recommend.Recommend(call, timeout=seconds)
        except _BACKEND_ERRORS as err:
            _unexpected(err, "recommendation")
            _observe("recommendation", started, False, err)
            return self._fallback(request, slot)
        _observe("recommendation", started, True)
        return self._placed(slot, reply)

    async def _ranked(self, request: gateway_pb2.PersonalizeRequest, slot: Slot,
                      signals: recommend_pb2.UserSignals | None, deadline: float) -> Placed:
        """A placement given as the caller's own list, put in this shopper's order by Rank; when
        Rank fails or is late, the caller's order (its exclusions applied, cut to k)."""
        loop = asyncio.get_running_loop()
        call = self._rank_request(request, slot, signals)
        started = time.perf_counter()
        try:
            reply = await self.recommend.Rank(call, timeout=max(deadline - loop.time(), 0.001))
        except _BACKEND_ERRORS as err:
            _unexpected(err, "recommendation")
            _observe("recommendation", started, False, err)
            return self._caller_order(slot)
        _observe("recommendation", started, True)
        return self._placed(slot, reply)

    @staticmethod
    def _rank_request(request: gateway_pb2.PersonalizeRequest, slot: Slot,
                      signals: recommend_pb2.UserSignals | None) -> recommend_pb2.RankRequest:
        return recommend_pb2.RankRequest(user=signals, product_ids=slot.candidates, constraints=slot.constraints,
                                         context=request.context, k=slot.k)

    @staticmethod
    def _caller_order(slot: Slot) -> Placed:
        excluded = set(slot.constraints.exclude_product_ids)
        ids: list[str] = []
        for product_id in slot.candidates:
            if product_id not in excluded:
                excluded.add(product_id)  # each once
                ids.append(product_id)
        if slot.k:
            ids = ids[:slot.k]
        items = [recommend_pb2.ScoredProduct(product_id=p, reason="caller order") for p in ids]
        return gateway_pb2.PlacementResult(slot_id=slot.slot_id, items=items, strategy_used=CALLER_ORDER,
                                           fallback=True), False, ""
