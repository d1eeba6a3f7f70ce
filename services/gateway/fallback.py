"""What the gateway answers when a backend is late or down.

Placements fall back to trending lists kept warm in the gateway (refreshed in the
background from the recommendation service, globally and per category on demand);
segments fall back to the built-ins computable from the request context alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import grpc

from services.common.logs import LogOnce
from services.gateway import config as limits
from services.gateway.metrics import TRENDING_CATEGORY_ERRORS, TRENDING_REFRESHES
from vitrine.v1 import common_pb2, recommend_pb2

log = logging.getLogger(__name__)
_logged = LogOnce()

FALLBACK_STRATEGY = "TRENDING"


def context_segments(context: common_pb2.Context, *, new_visitor: bool) -> list[str]:
    """Built-in segments that need nothing but the request context."""
    segments = ["new_visitor"] if new_visitor else []
    if context.traffic_source:
        segments.append(f"source:{context.traffic_source.lower()}")
    if context.device_type:
        segments.append(f"device:{context.device_type.lower()}")
    if context.country:
        segments.append(f"geo:{context.country.upper()}")
    if context.utm.campaign:
        segments.append(f"utm_campaign:{context.utm.campaign}")
    return segments


def _passes(item: recommend_pb2.ScoredProduct, constraints: recommend_pb2.Constraints,
            excluded: set[str] | frozenset[str]) -> bool:
    if item.product_id in excluded:
        return False
    if constraints.include_categories and item.category not in constraints.include_categories:
        return False
    if constraints.exclude_categories and item.category in constraints.exclude_categories:
        return False
    if constraints.max_price and item.price > constraints.max_price:
        return False
    return not (constraints.min_price and item.price < constraints.min_price)


class TrendingCache:
    """Warm trending lists; `items()` never waits on the network."""

    def __init__(self, recommend: Any, refresh_seconds: float, *, size: int = limits.TRENDING_SIZE,
                 max_categories: int = limits.TRENDING_CATEGORY_LISTS) -> None:
        self._recommend = recommend
        self._refresh_seconds = refresh_seconds
        self._size = size
        self._max_categories = max_categories
        self.global_items: list[recommend_pb2.ScoredProduct] = []
        self._by_category: OrderedDict[str, list[recommend_pb2.ScoredProduct]] = OrderedDict()
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._fetches: set[asyncio.Task[None]] = set()

    async def _fetch(self, category: str = "") -> list[recommend_pb2.ScoredProduct]:
        request = recommend_pb2.RecommendRequest(strategy=recommend_pb2.TRENDING, k=self._size)
        if category:
            request.constraints.include_categories.append(category)
        reply = await self._recommend.Recommend(request, timeout=limits.TRENDING_CALL_TIMEOUT_S)
        return list(reply.items)

    async def refresh(self) -> bool:
        """Refresh every list once; False when the recommendation service did not answer."""
        try:
            items = await self._fetch()
            if items or not self.global_items:
                self.global_items = items
            for category in list(self._by_category):
                fetched = await self._fetch(category)
                if fetched or not self._by_category.get(category):
                    self._by_category[category] = fetched
        except (TimeoutError, grpc.aio.AioRpcError) as err:
            TRENDING_REFRESHES.labels("error").inc()
            log.warning("trending refresh failed: %s",
                        err.code().name if isinstance(err, grpc.aio.AioRpcError) else "timeout")
            return False
        TRENDING_REFRESHES.labels("ok").inc()
        return True

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the refresher must outlive any surprise; the old lists stay
                TRENDING_REFRESHES.labels("error").inc()
                log.exception("trending refresh failed")
            cold = not self.global_items
            await asyncio.sleep(min(self._refresh_seconds, limits.TRENDING_EMPTY_REFRESH_S) if cold
                                else self._refresh_seconds)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="trending-refresh")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._fetches) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None

    def _want(self, category: str) -> None:
        """Fetch a category's list in the background (once), for the next requests."""
        if category in self._pending or self._task is None:
            return
        self._pending.add(category)

        async def fetch() -> None:
            try:
                self._by_category[category] = await self._fetch(category)
                while len(self._by_category) > self._max_categories:
                    self._by_category.popitem(last=False)
            except (TimeoutError, grpc.aio.AioRpcError) as err:
                # The global list serves this category meanwhile; the next request asks again.
                code = err.code().name if isinstance(err, grpc.aio.AioRpcError) else "TIMEOUT"
                TRENDING_CATEGORY_ERRORS.labels(code).inc()
                if _logged.first(code):
                    log.warning("fetching a category's trending list failed (%s); the global list serves it "
                                "(counted in vitrine_gateway_trending_category_errors_total; logged once)", code)
            finally:
                self._pending.discard(category)

        task = asyncio.create_task(fetch())
        self._fetches.add(task)
        task.add_done_callback(self._fetches.discard)

    def items(self, k: int, constraints: recommend_pb2.Constraints,
              exclude: Sequence[str] = ()) -> list[recommend_pb2.ScoredProduct]:
        """Up to k warm trending items that pass the cheap part of `constraints`: the category's
        list first when one category is asked for, then the global list (an empty or short category
        list must not leave the placement empty; `_passes` still applies the category filter)."""
        sources = [self.global_items]
        if len(constraints.include_categories) == 1:
            category = constraints.include_categories[0]
            scoped = self._by_category.get(category)
            if scoped is None:
                self._want(category)
            else:
                self._by_category.move_to_end(category)
                sources.insert(0, scoped)
        excluded = set((*constraints.exclude_product_ids, *exclude))
        picked: list[recommend_pb2.ScoredProduct] = []
        for source in sources:
            for item in source:
                if _passes(item, constraints, excluded):
                    picked.append(item)
                    excluded.add(item.product_id)  # an item on both lists is picked once
                    if len(picked) >= k:
                        return picked
        return picked
