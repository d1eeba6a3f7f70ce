"""RecommendService: protobuf in, a call on `RecommendationService`, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.common.errors import VitrineError
from services.recommendation.catalog import StockChange
from services.recommendation.engine import Query, Result, Rules, Shopper
from services.recommendation.query import RankQuery
from services.recommendation.service import RecommendationService, Summary, TrainSpec
from vitrine.v1 import common_pb2, recommend_pb2, recommend_pb2_grpc


def _summary(summary: Summary) -> recommend_pb2.UpsertSummary:
    return recommend_pb2.UpsertSummary(upserted=summary.upserted, rejected=summary.rejected, errors=summary.errors)


def _shopper(u: recommend_pb2.UserSignals) -> Shopper:
    return Shopper(user_id=u.user_id, recent=tuple(u.recent_product_ids), purchased=tuple(u.purchased_product_ids),
                   affinity=dict(u.category_affinity), budget=u.budget, recent_counts=tuple(u.recent_view_counts))


def _rules(c: recommend_pb2.Constraints) -> Rules:
    return Rules(include_out_of_stock=c.include_out_of_stock, max_price=c.max_price, min_price=c.min_price,
                 exclude_ids=tuple(c.exclude_product_ids), include_categories=tuple(c.include_categories),
                 exclude_categories=tuple(c.exclude_categories), max_per_category=c.max_per_category,
                 exclude_purchased=c.exclude_purchased)


def query_from_proto(request: recommend_pb2.RecommendRequest) -> Query:
    return Query(
        strategy=recommend_pb2.Strategy.Name(request.strategy) if request.strategy in
        recommend_pb2.Strategy.values() else "STRATEGY_UNSPECIFIED",
        k=request.k,
        anchor=request.product_id,
        cart=tuple(request.cart_product_ids),
        shopper=_shopper(request.user),
        rules=_rules(request.constraints),
    )


def rank_query_from_proto(request: recommend_pb2.RankRequest) -> RankQuery:
    return RankQuery(product_ids=tuple(request.product_ids), k=request.k, shopper=_shopper(request.user),
                     rules=_rules(request.constraints))


def response_from_result(result: Result) -> recommend_pb2.RecommendResponse:
    return recommend_pb2.RecommendResponse(
        items=[recommend_pb2.ScoredProduct(product_id=i.product_id, score=i.score, title=i.title,
                                           category=i.category, price=i.price, reason=i.reason,
                                           stock=i.stock, brand=i.brand) for i in result.items],
        strategy_used=result.strategy_used, fallback=result.fallback, model_version=result.model_version,
        unknown_products=result.unknown_products)


def _batch_result(outcome: Result | VitrineError) -> recommend_pb2.RecommendResult:
    if isinstance(outcome, VitrineError):
        code = getattr(grpc.StatusCode, outcome.code_name, grpc.StatusCode.UNKNOWN)
        return recommend_pb2.RecommendResult(code=code.value[0], error=outcome.message)
    return recommend_pb2.RecommendResult(response=response_from_result(outcome))


class RecommendServicer(recommend_pb2_grpc.RecommendServiceServicer):
    def __init__(self, service: RecommendationService) -> None:
        self.service = service

    async def UpsertProducts(self, request_iterator: AsyncIterator[common_pb2.Product],
                             context: grpc.aio.ServicerContext) -> recommend_pb2.UpsertSummary:
        return _summary(await self.service.upsert(request_iterator))

    async def UpdateInventory(self, request_iterator: AsyncIterator[recommend_pb2.StockUpdate],
                              context: grpc.aio.ServicerContext) -> recommend_pb2.UpsertSummary:
        async def changes() -> AsyncIterator[StockChange]:
            async for update in request_iterator:
                yield StockChange(update.product_id, update.stock,
                                  update.price if update.HasField("price") else None)

        return _summary(await self.service.update_inventory(changes()))

    async def Observe(self, request_iterator: AsyncIterator[common_pb2.Event],
                      context: grpc.aio.ServicerContext) -> recommend_pb2.ObserveSummary:
        result = await self.service.observe(request_iterator)
        return recommend_pb2.ObserveSummary(observed=result.observed, ignored=result.ignored,
                                            rejected=result.rejected, errors=result.errors)

    async def Train(self, request: recommend_pb2.TrainRequest,
                    context: grpc.aio.ServicerContext) -> recommend_pb2.TrainResponse:
        spec = TrainSpec(sessions=[list(s.product_ids) for s in request.sessions], dimensions=request.dimensions,
                         from_event_log=request.from_event_log, since_ms=request.since_ms,
                         create_missing_products=request.create_missing_products)
        out = await self.service.train(spec)
        return recommend_pb2.TrainResponse(
            model_version=out.model_version, items=out.items, interactions=out.interactions,
            index_type=out.index_type, train_seconds=out.train_seconds, index_seconds=out.index_seconds,
            products_created=out.products_created, recall_at_10=out.recall_at_10)

    async def Recommend(self, request: recommend_pb2.RecommendRequest,
                        context: grpc.aio.ServicerContext) -> recommend_pb2.RecommendResponse:
        return response_from_result(self.service.recommend(query_from_proto(request)))

    async def Rank(self, request: recommend_pb2.RankRequest,
                   context: grpc.aio.ServicerContext) -> recommend_pb2.RecommendResponse:
        return response_from_result(self.service.rank(rank_query_from_proto(request)))

    async def RecommendBatch(self, request: recommend_pb2.RecommendBatchRequest,
                             context: grpc.aio.ServicerContext) -> recommend_pb2.RecommendBatchResponse:
        def expired() -> bool:
            remaining = context.time_remaining()
            return remaining is not None and remaining <= 0

        queries: list[Query | RankQuery] = [query_from_proto(r) for r in request.requests]
        queries += [rank_query_from_proto(r) for r in request.ranks]
        outcomes = [_batch_result(o) for o in self.service.recommend_many(queries, expired)]
        n = len(request.requests)
        return recommend_pb2.RecommendBatchResponse(results=outcomes[:n], rank_results=outcomes[n:])

    async def FollowCatalog(self, request: recommend_pb2.FollowCatalogRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[recommend_pb2.CatalogChange]:
        async for change in self.service.follow_catalog(request.from_seq):
            yield change

    async def GetProduct(self, request: recommend_pb2.GetProductRequest,
                         context: grpc.aio.ServicerContext) -> common_pb2.Product:
        return self.service.get_product(request.product_id)

    async def GetModelInfo(self, request: recommend_pb2.GetModelInfoRequest,
                           context: grpc.aio.ServicerContext) -> recommend_pb2.ModelInfo:
        return recommend_pb2.ModelInfo(**self.service.model_info())
