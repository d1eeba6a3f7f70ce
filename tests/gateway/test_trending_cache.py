"""The warm trending lists behind the default experience: never empty for longer than needed.

Found by the reliability suite (#19): a gateway started before the catalog kept an empty global list
for a whole refresh period (10 s), and a category whose list came back empty left its placement
empty; with the recommendation service paused, the default experience then had no items."""

from __future__ import annotations

import asyncio

from services.gateway import config as limits
from services.gateway.fallback import TrendingCache
from vitrine.v1 import recommend_pb2


def product(pid: str, category: str) -> recommend_pb2.ScoredProduct:
    return recommend_pb2.ScoredProduct(product_id=pid, category=category, price=10.0)


class Catalog:
    """A recommendation backend whose trending lists are whatever the test puts in them."""

    def __init__(self) -> None:
        self.global_items: list[recommend_pb2.ScoredProduct] = []
        self.by_category: dict[str, list[recommend_pb2.ScoredProduct]] = {}
        self.calls = 0

    async def Recommend(self, request: recommend_pb2.RecommendRequest,
                        **call: float) -> recommend_pb2.RecommendResponse:
        self.calls += 1
        if request.constraints.include_categories:
            items = self.by_category.get(request.constraints.include_categories[0], [])
        else:
            items = self.global_items
        return recommend_pb2.RecommendResponse(items=items[: request.k])


async def test_a_cold_list_is_refreshed_soon_not_after_the_refresh_period() -> None:
    backend = Catalog()
    cache = TrendingCache(backend, 3600.0)  # a refresh period far longer than the test
    cache.start()
    try:
        await asyncio.sleep(0.1)
        assert cache.global_items == []  # the catalog is still empty: the first refresh found nothing
        backend.global_items = [product("p1", "shoes"), product("p2", "hats")]
        for _ in range(int(3 * limits.TRENDING_EMPTY_REFRESH_S / 0.05)):
            if cache.global_items:
                break
            await asyncio.sleep(0.05)
        assert [p.product_id for p in cache.global_items] == ["p1", "p2"]
        warm_calls = backend.calls
        await asyncio.sleep(2 * limits.TRENDING_EMPTY_REFRESH_S)
        assert backend.calls == warm_calls  # once warm, the refresh period applies again
    finally:
        await cache.stop()


async def test_an_empty_or_short_category_list_is_filled_from_the_global_list() -> None:
    backend = Catalog()
    backend.global_items = [product("g1", "shoes"), product("g2", "hats"), product("g3", "shoes")]
    backend.by_category = {"shoes": [product("g3", "shoes")], "bags": []}
    cache = TrendingCache(backend, 3600.0)
    assert await cache.refresh()
    cache.start()
    try:
        for category in ("shoes", "bags"):
            cache.items(5, recommend_pb2.Constraints(include_categories=[category]))  # asks for the list
            await asyncio.wait_for(asyncio.gather(*cache._fetches), 5)
        shoes = cache.items(5, recommend_pb2.Constraints(include_categories=["shoes"]))
        # the category's own list first, then the global list's items of that category, each once
        assert [p.product_id for p in shoes] == ["g3", "g1"]
        assert cache.items(5, recommend_pb2.Constraints(include_categories=["bags"])) == []  # none anywhere
        assert [p.product_id for p in cache.items(2, recommend_pb2.Constraints(), exclude=["g1"])] == ["g2", "g3"]
    finally:
        await cache.stop()
