"""Recommend: retrieve candidates per strategy, re-rank them in one kernel call, explain them.

Flow of one request (`Recommender.recommend`):
1. `query.validate` the query (k, prices, lists, contradictory constraints; unknown anchor -> NOT_FOUND).
2. The strategy's retriever (`retrieval.py`) returns up to n candidates (catalog rows, scores,
   source codes), n = k * candidate_multiplier + the number of excluded rows.
3. `scoring.rerank.rerank` applies the constraints and the shopper's signals and keeps k.
   When it keeps fewer than k and the retriever has more, n grows RETRY_GROWTH times (up to
   MAX_CANDIDATES) and step 2 repeats.
4. Still fewer than k: the list is topped up with trending items (`trending.py`) under the same
   constraints. Nothing at all: trending items alone answer, with `fallback = true`.
5. Each item gets its reason text (`explanations.py`).

`Rank` (a caller's own list) is `rank.py`; it shares the kernel call and the items built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from scoring import rerank as rr
from services.common.errors import NotFound
from services.recommendation.candidates import (
    NO_ROWS,
    PRIMARY_SOURCE,
    SOURCE_STRATEGY,
    Candidates,
    RequestState,
)
from services.recommendation.catalog import Catalog
from services.recommendation.config import MAX_CANDIDATES, RETRY_GROWTH, TRENDING_POOL
from services.recommendation.explanations import reason
from services.recommendation.model import Model
from services.recommendation.query import Query, Rules, Shopper, validate
from services.recommendation.retrieval import (
    ForYouParams,
    Retrieval,
    Retriever,
    for_you_candidate_count,
    for_you_category_boost,
)
from services.recommendation.signals import Signals
from services.recommendation.trending import Trending, TrendingCache

__all__ = ["Item", "Query", "Recommender", "Result", "Rules", "Shopper"]


class Item(NamedTuple):  # a NamedTuple: 20 of these are built per request
    product_id: str
    score: float
    title: str
    category: str
    price: float
    stock: int
    brand: str
    reason: str


@dataclass(frozen=True)
class Result:
    items: list[Item]
    strategy_used: str
    fallback: bool
    model_version: str
    unknown_products: int = 0   # Rank: ids of the caller's list not in the catalog (dropped)


class Recommender:
    """Answers Recommend from the catalog, the current model and the real-time signals."""

    def __init__(self, catalog: Catalog, signals: Signals, *, candidate_multiplier: int = 10,
                 budget_tolerance: float = rr.DEFAULT_BUDGET_TOLERANCE) -> None:
        self.catalog = catalog
        self.signals = signals
        self.model: Model | None = None   # swapped whole by Train; read once per request
        self.candidate_multiplier = candidate_multiplier
        self.budget_tolerance = budget_tolerance
        self.for_you = ForYouParams()
        self.trending = Trending(catalog, signals)
        self.retrieval = Retrieval(catalog, signals, self.trending)

    # -- entry point -------------------------------------------------------------------------
    def recommend(self, q: Query) -> Result:
        validate(q)
        model = self.model
        cat = self.catalog
        anchor_row = -1
        if q.anchor:
            anchor_row = cat.row_of.get(q.anchor, -1)
            if anchor_row < 0:
                raise NotFound(f"unknown product_id {q.anchor!r}; upsert it first")
        cart_rows = cat.rows(q.cart)
        if q.strategy == "CART_COMPLEMENTS" and q.cart and not (cart_rows >= 0).any() and anchor_row < 0:
            raise NotFound("none of cart_product_ids is a known product")
        excluded = self.excluded(q.rules, q.shopper, cart_rows, anchor_row,
                                 recent=q.strategy == "FOR_YOU" and self.for_you.exclude_recent)
        ctx = RequestState(q, model, anchor_row, cart_rows[cart_rows >= 0], excluded, cat)
        retrieve, boost = self._retriever(ctx)
        ranked, cands = self._rank(ctx, retrieve, boost)
        primary = PRIMARY_SOURCE[q.strategy]
        fallback = False
        strategy_used = q.strategy
        if len(ranked.positions) < q.k and q.strategy != "TRENDING":
            names = q.rules.include_categories
            if ctx.include_categories is not None:  # the strategy may have narrowed them (UP_SELL)
                names = tuple(cat.category_names[c] for c in ctx.include_categories.tolist() if c >= 0)
            trending = self.trending.candidates(names, TRENDING_POOL)
            if len(trending):
                cands = cands.then(trending)
                ranked = self.kernel(ctx, cands, boost)
        if not len(ranked.positions) and q.strategy == "UP_SELL":
            ctx.reset_rules(cat)  # nothing pricier in the category: trending under the request's rules
            cands = self.trending.candidates(q.rules.include_categories, TRENDING_POOL)
            ranked = self.kernel(ctx, cands, None)
        sources = cands.sources[ranked.positions]
        if len(sources) and not (sources == primary).any():
            fallback = True
            values, counts = np.unique(sources, return_counts=True)
            strategy_used = SOURCE_STRATEGY[int(values[np.argmax(counts)])]
        elif not len(sources):
            fallback = q.strategy != "TRENDING"
        items = self.items(ctx, cands, ranked)
        return Result(items, strategy_used, fallback, model.version if model else "")

    # -- trending pool (the service refreshes it off the loop) ---------------------------------
    def trending_is_stale(self) -> bool:
        return self.trending.is_stale()

    def compute_trending(self, n: int = 0) -> TrendingCache:
        return self.trending.compute(n)

    def set_trending(self, cache: TrendingCache) -> None:
        self.trending.install(cache)

    # -- pieces ------------------------------------------------------------------------------
    def excluded(self, rules: Rules, shopper: Shopper, cart_rows: np.ndarray = NO_ROWS, anchor_row: int = -1, *,
                 recent: bool = False) -> np.ndarray:
        """Rows the kernel must drop (any order: it builds its own set), -1s removed."""
        parts = [cart_rows] if cart_rows.size else []
        if rules.exclude_ids:
            parts.append(self.catalog.rows(rules.exclude_ids))
        if anchor_row >= 0:
            parts.append(np.array([anchor_row], np.int64))
        if rules.exclude_purchased and shopper.purchased:
            parts.append(self.catalog.rows(shopper.purchased))
        if recent and shopper.recent:
            parts.append(self.catalog.rows(shopper.recent))
        if not parts:  # the usual request: nothing to concatenate or sort
            return NO_ROWS
        rows = np.concatenate(parts)
        return np.unique(rows[rows >= 0])

    def _retriever(self, ctx: RequestState) -> tuple[Retriever, np.ndarray | None]:
        q, strategy, r = ctx.q, ctx.q.strategy, self.retrieval
        if strategy == "FOR_YOU":
            boost = for_you_category_boost(q.shopper.affinity, self.catalog, self.for_you.category_weight)
            return r.for_you(ctx, self.for_you), boost
        if strategy == "SIMILAR":
            return r.similar(ctx), None
        if strategy == "BOUGHT_TOGETHER":
            return r.together(ctx, np.array([ctx.anchor_row], np.int64)), None
        if strategy == "CART_COMPLEMENTS":
            rows = ctx.cart_rows if ctx.cart_rows.size else np.array([ctx.anchor_row], np.int64)
            return r.together(ctx, rows), None
        if strategy == "UP_SELL":
            return r.up_sell(ctx, self.budget_tolerance), None
        if strategy == "RECENTLY_VIEWED":
            return r.recent(ctx), None
        boost = for_you_category_boost(q.shopper.affinity, self.catalog, self.for_you.category_weight)
        return (lambda n: self.trending.candidates(q.rules.include_categories, n)), boost

    def _rank(self, ctx: RequestState, retrieve: Retriever,
              boost: np.ndarray | None) -> tuple[rr.Ranked, Candidates]:
        k = ctx.q.k
        n = for_you_candidate_count(k, ctx.excluded.size, self.for_you, self.candidate_multiplier) \
            if ctx.q.strategy == "FOR_YOU" else k * self.candidate_multiplier + ctx.excluded.size
        n = min(n, MAX_CANDIDATES)
        while True:
            cands = retrieve(n)
            ranked = self.kernel(ctx, cands, boost)
            if len(ranked.positions) >= k or cands.complete or n >= MAX_CANDIDATES:
                return ranked, cands
            n = min(MAX_CANDIDATES, n * RETRY_GROWTH)

    def kernel(self, ctx: RequestState, cands: Candidates, boost: np.ndarray | None) -> rr.Ranked:
        """The one call of the re-ranking kernel: every constraint of the request, top k."""
        q, cat = ctx.q, self.catalog
        r = q.rules
        return rr.rerank(
            cands.rows, cands.scores, stock=cat.stock, price=cat.price, category=cat.category, k=q.k,
            excluded=ctx.excluded, include_categories=ctx.include_categories,
            exclude_categories=cat.category_ids(r.exclude_categories) if r.exclude_categories else None,
            category_boost=boost, include_out_of_stock=r.include_out_of_stock, min_price=ctx.min_price,
            max_price=ctx.max_price, budget=q.shopper.budget, budget_tolerance=self.budget_tolerance,
            max_per_category=r.max_per_category, n_categories=cat.n_categories,
        )

    def items(self, ctx: RequestState, cands: Candidates, ranked: rr.Ranked) -> list[Item]:
        """The response items of the kernel's picks, with their reason text."""
        cat = self.catalog
        rows = cands.rows[ranked.positions]
        sources = cands.sources[ranked.positions].tolist()
        prices = cat.price[rows].tolist()
        stocks = cat.stock[rows].tolist()
        categories = cat.category[rows].tolist()
        names = cat.category_names
        ids, titles, brands = cat.ids, cat.titles, cat.brands
        anchor = ctx.anchor_name(cat)
        strategy, category_filter = ctx.q.strategy, bool(ctx.q.rules.include_categories)
        out = []
        for t, (row, score, code) in enumerate(zip(rows.tolist(), ranked.scores.tolist(), ranked.reasons.tolist(),
                                                   strict=True)):
            category = names[categories[t]] if categories[t] >= 0 else ""
            out.append(Item(ids[row], score, titles[row], category, prices[t], stocks[t], brands[row],
                            reason(sources[t], code, category, strategy=strategy, anchor=anchor,
                                   category_filter=category_filter)))
        return out
