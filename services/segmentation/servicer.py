"""SegmentService over gRPC: protobuf in, a call on the SegmentEngine, protobuf out."""

from __future__ import annotations

import grpc

from scoring.rules import RuleError
from services.common.errors import FailedPrecondition
from services.segmentation.engine import SegmentEngine
from services.segmentation.scan import ProfileScanner
from vitrine.v1 import segment_pb2, segment_pb2_grpc


class SegmentServicer(segment_pb2_grpc.SegmentServiceServicer):
    def __init__(self, engine: SegmentEngine, scanner: ProfileScanner | None, scan_timeout: float) -> None:
        self.engine = engine
        self.scanner = scanner
        self.scan_timeout = scan_timeout

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
        timeout = self.scan_timeout
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(0.001, min(timeout, remaining))
        matching, total = await self.engine.estimate_size(compiled, self.scanner.sources(timeout), request.now_ms)
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
