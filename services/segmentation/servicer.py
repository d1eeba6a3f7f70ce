"""SegmentService over gRPC: protobuf in, a call on the SegmentEngine, protobuf out."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc

from scoring.rules import RuleError
from services.common.errors import FailedPrecondition, InvalidArgument
from services.segmentation.engine import SegmentEngine
from services.segmentation.results import ExperimentResults, Results
from services.segmentation.scan import ProfileScanner
from vitrine.v1 import segment_pb2, segment_pb2_grpc


class SegmentServicer(segment_pb2_grpc.SegmentServiceServicer):
    def __init__(self, engine: SegmentEngine, scanner: ProfileScanner | None, scan_timeout: float,
                 results: ExperimentResults | None = None) -> None:
        self.engine = engine
        self.scanner = scanner
        self.scan_timeout = scan_timeout
        self.results = results

    def _scan_timeout(self, context: grpc.aio.ServicerContext) -> float:
        timeout = self.scan_timeout
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(0.001, min(timeout, remaining))
        return timeout

    async def PutSegment(self, request: segment_pb2.PutSegmentRequest, context: grpc.aio.ServicerContext
                         ) -> segment_pb2.Segment:
        return await self.engine.put_segment(request.segment)

    async def GetSegment(self, request: segment_pb2.GetSegmentRequest, context: grpc.aio.ServicerContext
                         ) -> segment_pb2.Segment:
        return self.engine.get_segment(request.segment_id)

    async def ListSegments(self, request: segment_pb2.ListSegmentsRequest, context: grpc.aio.ServicerContext
                           ) -> segment_pb2.ListSegmentsResponse:
        return segment_pb2.ListSegmentsResponse(segments=self.engine.list_segments(request.include_builtin))

    async def DeleteSegment(self, request: segment_pb2.DeleteSegmentRequest,
                            context: grpc.aio.ServicerContext) -> segment_pb2.DeleteSegmentResponse:
        return segment_pb2.DeleteSegmentResponse(deleted=await self.engine.delete_segment(request.segment_id))

    async def Evaluate(self, request: segment_pb2.EvaluateRequest, context: grpc.aio.ServicerContext
                       ) -> segment_pb2.EvaluateResponse:
        profile = request.profile if request.HasField("profile") else None
        ids, offers = self.engine.evaluate(profile, request.context if request.HasField("context") else None,
                                           request.now_ms)
        assignments = self.engine.assign(profile, ids, request.now_ms)
        return segment_pb2.EvaluateResponse(segment_ids=ids, offers=offers, assignments=assignments)

    async def EstimateSize(self, request: segment_pb2.EstimateSizeRequest, context: grpc.aio.ServicerContext
                           ) -> segment_pb2.EstimateSizeResponse:
        compiled = self.engine.rule_for_estimate(request.segment_id, request.rule)
        if self.scanner is None:
            raise FailedPrecondition("no profile_addresses configured; EstimateSize needs the profile service")
        matching, total = await self.engine.estimate_size(compiled, self.scanner.sources(self._scan_timeout(context)),
                                                          request.now_ms)
        return segment_pb2.EstimateSizeResponse(matching=matching, total=total)

    async def PutOffer(self, request: segment_pb2.PutOfferRequest, context: grpc.aio.ServicerContext
                       ) -> segment_pb2.Offer:
        return await self.engine.put_offer(request.offer)

    async def ListOffers(self, request: segment_pb2.ListOffersRequest, context: grpc.aio.ServicerContext
                         ) -> segment_pb2.ListOffersResponse:
        offers = self.engine.list_offers(request.active_only, request.segment_id)
        return segment_pb2.ListOffersResponse(offers=offers)

    async def DeleteOffer(self, request: segment_pb2.DeleteOfferRequest, context: grpc.aio.ServicerContext
                          ) -> segment_pb2.DeleteOfferResponse:
        return segment_pb2.DeleteOfferResponse(deleted=await self.engine.delete_offer(request.offer_id))

    async def ValidateRule(self, request: segment_pb2.ValidateRuleRequest, context: grpc.aio.ServicerContext
                           ) -> segment_pb2.ValidateRuleResponse:
        try:
            compiled = self.engine.compile_checked(request.rule)
        except RuleError as exc:
            return segment_pb2.ValidateRuleResponse(valid=False, error=exc.reason, line=exc.line,
                                                    column=exc.column)
        return segment_pb2.ValidateRuleResponse(valid=True, fields=compiled.fields)

    async def PutExperiment(self, request: segment_pb2.PutExperimentRequest, context: grpc.aio.ServicerContext
                            ) -> segment_pb2.Experiment:
        return await self.engine.put_experiment(request.experiment)

    async def GetExperiment(self, request: segment_pb2.GetExperimentRequest, context: grpc.aio.ServicerContext
                            ) -> segment_pb2.Experiment:
        return self.engine.get_experiment(request.experiment_id)

    async def ListExperiments(self, request: segment_pb2.ListExperimentsRequest,
                              context: grpc.aio.ServicerContext) -> segment_pb2.ListExperimentsResponse:
        return segment_pb2.ListExperimentsResponse(experiments=self.engine.list_experiments(request.active_only))

    async def DeleteExperiment(self, request: segment_pb2.DeleteExperimentRequest,
                               context: grpc.aio.ServicerContext) -> segment_pb2.DeleteExperimentResponse:
        return segment_pb2.DeleteExperimentResponse(deleted=await self.engine.delete_experiment(request.experiment_id))

    async def GetExperimentResults(self, request: segment_pb2.GetExperimentResultsRequest,
                                   context: grpc.aio.ServicerContext) -> segment_pb2.ExperimentResults:
        experiment = self.engine.get_experiment(request.experiment_id)
        if self.results is None:
            raise FailedPrecondition("experiment results are not kept by this server (no results store)")
        return results_message(experiment.experiment_id, self.results.results(experiment), self.engine.now())

    async def ExportAudience(self, request: segment_pb2.ExportAudienceRequest, context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[segment_pb2.AudienceMember]:
        compiled = self.engine.rule_for_estimate(request.segment_id, request.rule)
        if request.limit < 0:
            raise InvalidArgument(f"limit {request.limit} must be >= 0 (0 = every member)")
        if self.scanner is None:
            raise FailedPrecondition("no profile_addresses configured; ExportAudience needs the profile service")
        members = self.engine.export_audience(compiled, self.scanner.sources(self._scan_timeout(context)),
                                              require_marketing_consent=request.require_marketing_consent,
                                              limit=request.limit, now=request.now_ms)
        async for member in members:
            yield member


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def results_message(experiment_id: str, results: Results, computed_ms: int) -> segment_pb2.ExperimentResults:
    """Undefined numbers (no data yet, a control without converters) travel as NaN (proto3 doubles
    carry it; clients print "-"); counts are exact."""
    report = results.report
    out = segment_pb2.ExperimentResults(experiment_id=experiment_id, srm_p_value=report.srm_p_value,
                                        srm_detected=report.srm_detected, computed_ms=computed_ms,
                                        events_seen=results.items_seen, mixed_users=results.mixed_users)
    for v in report.variants:
        c = v.counts
        out.variants.add(
            variant_id=c.variant_id, users=c.users, converters=c.converters, conversion_rate=v.conversion_rate,
            conversion_ci_low=v.conversion_ci[0], conversion_ci_high=v.conversion_ci[1],
            revenue_per_user=v.revenue_per_user, revenue_ci_low=v.revenue_ci[0], revenue_ci_high=v.revenue_ci[1],
            conversion_lift=v.conversion_lift[0], conversion_lift_ci_low=v.conversion_lift[1],
            conversion_lift_ci_high=v.conversion_lift[2], revenue_lift=v.revenue_lift[0],
            revenue_lift_ci_low=v.revenue_lift[1], revenue_lift_ci_high=v.revenue_lift[2], clicks=c.clicks,
            add_to_carts=c.add_to_carts, revenue=_finite(c.revenue), weight=int(c.weight))
    return out
