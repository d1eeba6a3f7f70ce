"""Recommend: retrieve candidates per strategy, re-rank them in one kernel call, explain them.

Flow of one request (`Recommender.recommend`):
1. `validate` the query (k, prices, lists, contradictory constraints; unknown anchor -> NOT_FOUND).
2. The strategy's retriever returns up to n candidates (catalog rows, scores, source codes),
   n = k * candidate_multiplier + the number of excluded rows.
3. `scoring.rerank.rerank` applies the constraints and the shopper's signals and keeps k.
   When it keeps fewer than k and the retriever has more, n grows RETRY_GROWTH times (up to
   MAX_CANDIDATES) and step 2 repeats.
4. Still fewer than k: the list is topped up with trending items under the same constraints.
   Nothing at all: trending items alone answer, with `fallback = true`.

FOR_YOU details are kept in named functions and `ForYouParams` so the offline evaluation can
tune them: `for_you_query_vector`, `for_you_category_boost`, `for_you_candidate_count`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from scoring import rerank as rr
from scoring.session_knn import DEFAULT_N_RECENT as SESSION_N_RECENT
from scoring.session_knn import DEFAULT_RECENCY_DECAY as SESSION_RECENCY_DECAY
from scoring.session_knn import DEFAULT_REPEAT_WEIGHT as SESSION_REPEAT_WEIGHT
from scoring.session_knn import session_scores
from scoring.shopper import DEFAULT_CATEGORY_WEIGHT, DEFAULT_PURCHASE_WEIGHT, DEFAULT_RECENCY_DECAY, shopper_vector
from services.common.errors import InvalidArgument, NotFound
from services.recommendation.catalog import Catalog
from services.recommendation.config import (
    MAX_AFFINITY_ENTRIES,
    MAX_CANDIDATES,
    MAX_CART_IDS,
    MAX_CATEGORY_FILTERS,
    MAX_EXCLUDE_IDS,
    MAX_K,
    MAX_PRODUCT_ID_LENGTH,
    MAX_PURCHASED_IDS,
    MAX_RECENT_IDS,
    RETRY_GROWTH,
    TRENDING_POOL,
)
from services.recommendation.model import Model
from services.recommendation.signals import Signals, now_ms

STRATEGIES = ("FOR_YOU", "SIMILAR", "BOUGHT_TOGETHER", "UP_SELL", "RECENTLY_VIEWED", "TRENDING",
              "CART_COMPLEMENTS")
ANCHORED = ("SIMILAR", "BOUGHT_TOGETHER", "UP_SELL")

# Where a candidate came from (turned into the reason text).
SRC_FOR_YOU, SRC_SIMILAR, SRC_TOGETHER, SRC_UPSELL, SRC_RECENT, SRC_TRENDING, SRC_CART = range(7)
PRIMARY_SOURCE = {"FOR_YOU": SRC_FOR_YOU, "SIMILAR": SRC_SIMILAR, "BOUGHT_TOGETHER": SRC_TOGETHER,
                  "UP_SELL": SRC_UPSELL, "RECENTLY_VIEWED": SRC_RECENT, "TRENDING": SRC_TRENDING,
                  "CART_COMPLEMENTS": SRC_TOGETHER}
SOURCE_STRATEGY = {SRC_FOR_YOU: "FOR_YOU", SRC_SIMILAR: "SIMILAR", SRC_TOGETHER: "BOUGHT_TOGETHER",
                   SRC_UPSELL: "UP_SELL", SRC_RECENT: "RECENTLY_VIEWED", SRC_TRENDING: "TRENDING",
                   SRC_CART: "SIMILAR"}

UPSELL_SCAN_MAX = 50_000          # up-sell scores a whole category up to this size, else uses the index
TRENDING_REFRESH_MS = 1_000       # large catalogs: trending may be this stale (refreshed in the background)
TRENDING_INLINE_MAX_ITEMS = 20_000   # up to this many products, a request re-ranks trending itself when a count
#                                     changed; above, the background-refreshed ranking (<= 1 s old) serves:
#                                     at 100k products the inline re-rank was the top CPU cost under load
TOGETHER_SCORE_BASE = 1.0         # co-occurrence scores are 1 + w / max w: above any cosine
_NO_ROWS = np.zeros(0, np.int64)


@dataclass
class ForYouParams:
    """Tunable details of FOR_YOU (the evaluation sets these on `Recommender.for_you`)."""

    recency_decay: float = DEFAULT_RECENCY_DECAY       # weight of the p-th newest view: decay**p
    purchase_weight: float = DEFAULT_PURCHASE_WEIGHT   # each purchased item vs the newest view
    category_weight: float = DEFAULT_CATEGORY_WEIGHT   # score += weight * affinity / max affinity
    recent_window: int = MAX_RECENT_IDS                # newest views that shape the shopper vector
    candidate_multiplier: int = 0                      # 0 = the service's candidate_multiplier
    # Viewed items stay eligible: shoppers often go back to them (45 % of Tmall next clicks), and the
    # offline evaluation scores FOR_YOU 51.5 vs 8.6 HR@20 with them. A page that wants "nothing you
    # just saw" passes them in constraints.exclude_product_ids.
    exclude_recent: bool = False
    session_neighbours: bool = True                    # session item-item candidates rank above FAISS ones
    session_n_recent: int = SESSION_N_RECENT           # newest views that feed them
    session_recency_decay: float = SESSION_RECENCY_DECAY
    # Score of a viewed item itself (if not excluded); 0 = the weight the model tuned at training.
    session_repeat_weight: float = 0.0


@dataclass(frozen=True)
class Shopper:
    user_id: str = ""
    recent: tuple[str, ...] = ()          # newest first
    purchased: tuple[str, ...] = ()
    affinity: dict[str, float] = field(default_factory=dict)
    budget: float = 0.0


@dataclass(frozen=True)
class Rules:
    include_out_of_stock: bool = False
    max_price: float = 0.0
    min_price: float = 0.0
    exclude_ids: tuple[str, ...] = ()
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    max_per_category: int = 0
    exclude_purchased: bool = False


@dataclass(frozen=True)
class Query:
    strategy: str
    k: int
    anchor: str = ""
    cart: tuple[str, ...] = ()
    shopper: Shopper = field(default_factory=Shopper)
    rules: Rules = field(default_factory=Rules)


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


@dataclass
class Candidates:
    rows: np.ndarray      # int64 catalog rows (-1 = none)
    scores: np.ndarray    # float32
    sources: np.ndarray   # int8 SRC_*
    complete: bool        # True when asking for more would give nothing new

    @staticmethod
    def empty() -> Candidates:
        return Candidates(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int8), True)

    def __len__(self) -> int:
        return int(self.rows.size)

    def then(self, other: Candidates) -> Candidates:
        """`other` appended below every candidate of self (scores shifted under self's minimum)."""
        if not len(other):
            return self
        if not len(self):
            return other
        floor = float(self.scores.min()) - 1.0
        top = float(other.scores.max())
        shifted = (other.scores - top + floor).astype(np.float32)
        return Candidates(np.concatenate([self.rows, other.rows]), np.concatenate([self.scores, shifted]),
                          np.concatenate([self.sources, other.sources]), self.complete and other.complete)


def _finite_nonnegative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{name} must be a finite number >= 0, got {value}")


def _limit(name: str, values: tuple[str, ...] | dict[str, float], limit: int) -> None:
    if len(values) > limit:
        raise InvalidArgument(f"{name} has {len(values)} entries; at most {limit} are allowed")


def validate(q: Query) -> None:
    """Raise InvalidArgument for a query that cannot be answered as asked."""
    if q.strategy not in STRATEGIES:
        raise InvalidArgument(f"strategy must be one of {', '.join(STRATEGIES)}")
    if not 1 <= q.k <= MAX_K:
        raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {q.k}")
    r, s = q.rules, q.shopper
    _finite_nonnegative("constraints.max_price", r.max_price)
    _finite_nonnegative("constraints.min_price", r.min_price)
    _finite_nonnegative("user.budget", s.budget)
    if r.max_price > 0 and r.min_price > r.max_price:
        raise InvalidArgument(f"constraints.min_price ({r.min_price}) is above constraints.max_price "
                              f"({r.max_price}); nothing could match")
    if r.max_per_category < 0:
        raise InvalidArgument("constraints.max_per_category must be >= 0 (0 = no bound)")
    both = set(r.include_categories) & set(r.exclude_categories)
    if both:
        raise InvalidArgument(f"categories both included and excluded: {', '.join(sorted(both))}")
    _limit("constraints.exclude_product_ids", r.exclude_ids, MAX_EXCLUDE_IDS)
    _limit("constraints.include_categories", r.include_categories, MAX_CATEGORY_FILTERS)
    _limit("constraints.exclude_categories", r.exclude_categories, MAX_CATEGORY_FILTERS)
    _limit("cart_product_ids", q.cart, MAX_CART_IDS)
    _limit("user.recent_product_ids", s.recent, MAX_RECENT_IDS)
    _limit("user.purchased_product_ids", s.purchased, MAX_PURCHASED_IDS)
    _limit("user.category_affinity", s.affinity, MAX_AFFINITY_ENTRIES)
    if any(not math.isfinite(v) for v in s.affinity.values()):
        raise InvalidArgument("user.category_affinity values must be finite numbers")
    if len(q.anchor) > MAX_PRODUCT_ID_LENGTH:
        raise InvalidArgument(f"product_id is longer than {MAX_PRODUCT_ID_LENGTH} characters")
    if q.strategy in ANCHORED and not q.anchor:
        raise InvalidArgument(f"{q.strategy} needs product_id (the anchor product)")
    if q.strategy == "CART_COMPLEMENTS" and not q.cart and not q.anchor:
        raise InvalidArgument("CART_COMPLEMENTS needs cart_product_ids")


# -- FOR_YOU pieces, kept separate so the evaluation can tune them --------------------------------
def for_you_query_vector(model: Model, recent_rows: np.ndarray, purchased_rows: np.ndarray,
                         params: ForYouParams) -> np.ndarray:
    """The shopper vector (unit, float32) from catalog rows of recent views (newest first) and
    purchases; all zeros when none of them is in the model."""
    recent = model.rows_for(recent_rows[: params.recent_window])
    purchased = model.rows_for(purchased_rows)
    if not (recent >= 0).any() and not (purchased >= 0).any():
        return np.zeros(model.dim, np.float32)
    return shopper_vector(model.vectors, recent, purchased, recency_decay=params.recency_decay,
                          purchase_weight=params.purchase_weight)


def for_you_category_boost(affinity: dict[str, float], catalog: Catalog, weight: float) -> np.ndarray | None:
    """Per category id, weight * affinity / max affinity (float32), or None without affinities."""
    if not affinity or weight == 0:
        return None
    top = max(affinity.values())
    if top <= 0:
        return None
    boost = np.zeros(catalog.n_categories, np.float32)
    for name, value in affinity.items():
        cid = catalog.category_of.get(name)
        if cid is not None and value > 0:
            boost[cid] = weight * value / top
    return boost


def for_you_candidate_count(k: int, excluded: int, params: ForYouParams, default_multiplier: int) -> int:
    multiplier = params.candidate_multiplier or default_multiplier
    return k * multiplier + excluded


def session_candidates(model: Model, recent_rows: np.ndarray, source: int, *, n_recent: int = SESSION_N_RECENT,
                       recency_decay: float = SESSION_RECENCY_DECAY,
                       repeat_weight: float = SESSION_REPEAT_WEIGHT) -> Candidates:
    """Items that followed or preceded the given ones in training sessions (`scoring.session_knn`),
    scored 1 + s / max s so they rank above any vector candidate; empty without a table."""
    table = model.neighbours
    if table is None or not recent_rows.size:
        return Candidates.empty()
    rows, scores = session_scores(table, recent_rows, n_recent=n_recent, recency_decay=recency_decay,
                                  repeat_weight=repeat_weight)
    if not rows.size:
        return Candidates.empty()
    scores = (1.0 + scores / scores[0]).astype(np.float32)
    return Candidates(rows.astype(np.int64), scores, np.full(rows.size, source, np.int8), True)


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
        self._trending_cache: _TrendingCache | None = None

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
        excluded = self._excluded(q, anchor_row, cart_rows)
        ctx = _Context(q, model, anchor_row, cart_rows[cart_rows >= 0], excluded, cat)
        retrieve, boost = self._retriever(ctx)
        ranked, cands = self._rank(ctx, retrieve, boost)
        primary = PRIMARY_SOURCE[q.strategy]
        fallback = False
        strategy_used = q.strategy
        if len(ranked.positions) < q.k and q.strategy != "TRENDING":
            names = q.rules.include_categories
            if ctx.include_categories is not None:  # the strategy may have narrowed them (UP_SELL)
                names = tuple(cat.category_names[c] for c in ctx.include_categories.tolist() if c >= 0)
            trending = self._trending(names, TRENDING_POOL, ctx)
            if len(trending):
                cands = cands.then(trending)
                ranked = self._kernel(ctx, cands, boost)
        if not len(ranked.positions) and q.strategy == "UP_SELL":
            ctx.reset_rules(cat)  # nothing pricier in the category: trending under the request's rules
            cands = self._trending(q.rules.include_categories, TRENDING_POOL, ctx)
            ranked = self._kernel(ctx, cands, None)
        sources = cands.sources[ranked.positions]
        if len(sources) and not (sources == primary).any():
            fallback = True
            values, counts = np.unique(sources, return_counts=True)
            strategy_used = SOURCE_STRATEGY[int(values[np.argmax(counts)])]
        elif not len(sources):
            fallback = q.strategy != "TRENDING"
        items = self._items(ctx, cands, ranked)
        return Result(items, strategy_used, fallback, model.version if model else "")

    # -- pieces ------------------------------------------------------------------------------
    def _excluded(self, q: Query, anchor_row: int, cart_rows: np.ndarray) -> np.ndarray:
        """Rows the kernel must drop (any order: it builds its own set), -1s removed."""
        parts = [cart_rows] if cart_rows.size else []
        if q.rules.exclude_ids:
            parts.append(self.catalog.rows(q.rules.exclude_ids))
        if anchor_row >= 0:
            parts.append(np.array([anchor_row], np.int64))
        if q.rules.exclude_purchased and q.shopper.purchased:
            parts.append(self.catalog.rows(q.shopper.purchased))
        if q.strategy == "FOR_YOU" and self.for_you.exclude_recent and q.shopper.recent:
            parts.append(self.catalog.rows(q.shopper.recent))
        if not parts:  # the usual request: nothing to concatenate or sort
            return _NO_ROWS
        rows = np.concatenate(parts)
        return np.unique(rows[rows >= 0])

    def _retriever(self, ctx: _Context) -> tuple[Callable[[int], Candidates], np.ndarray | None]:
        q, strategy = ctx.q, ctx.q.strategy
        if strategy == "FOR_YOU":
            boost = for_you_category_boost(q.shopper.affinity, self.catalog, self.for_you.category_weight)
            return self._for_you(ctx), boost
        if strategy == "SIMILAR":
            return self._similar(ctx), None
        if strategy == "BOUGHT_TOGETHER":
            return self._together(ctx, np.array([ctx.anchor_row], np.int64)), None
        if strategy == "CART_COMPLEMENTS":
            rows = ctx.cart_rows if ctx.cart_rows.size else np.array([ctx.anchor_row], np.int64)
            return self._together(ctx, rows), None
        if strategy == "UP_SELL":
            return self._up_sell(ctx), None
        if strategy == "RECENTLY_VIEWED":
            return self._recent(ctx), None
        boost = for_you_category_boost(q.shopper.affinity, self.catalog, self.for_you.category_weight)
        return (lambda n: self._trending(q.rules.include_categories, n, ctx)), boost

    def _rank(self, ctx: _Context, retrieve: Callable[[int], Candidates],
              boost: np.ndarray | None) -> tuple[rr.Ranked, Candidates]:
        k = ctx.q.k
        n = for_you_candidate_count(k, ctx.excluded.size, self.for_you, self.candidate_multiplier) \
            if ctx.q.strategy == "FOR_YOU" else k * self.candidate_multiplier + ctx.excluded.size
        n = min(n, MAX_CANDIDATES)
        while True:
            cands = retrieve(n)
            ranked = self._kernel(ctx, cands, boost)
            if len(ranked.positions) >= k or cands.complete or n >= MAX_CANDIDATES:
                return ranked, cands
            n = min(MAX_CANDIDATES, n * RETRY_GROWTH)

    def _kernel(self, ctx: _Context, cands: Candidates, boost: np.ndarray | None) -> rr.Ranked:
        q, cat = ctx.q, self.catalog
        r = q.rules
        min_price, max_price = ctx.min_price, ctx.max_price
        include = ctx.include_categories
        return rr.rerank(
            cands.rows, cands.scores, stock=cat.stock, price=cat.price, category=cat.category, k=q.k,
            excluded=ctx.excluded, include_categories=include,
            exclude_categories=cat.category_ids(r.exclude_categories) if r.exclude_categories else None,
            category_boost=boost, include_out_of_stock=r.include_out_of_stock, min_price=min_price,
            max_price=max_price, budget=q.shopper.budget, budget_tolerance=self.budget_tolerance,
            max_per_category=r.max_per_category, n_categories=cat.n_categories,
        )

    def _search(self, model: Model, query: np.ndarray, n: int, source: int) -> Candidates:
        n = max(1, min(n, model.items))
        scores, ids = model.index.search(query, n)
        ids, scores = ids[0], scores[0]
        # a gather into a catalog-sized array costs a cache miss per result at 1M items: skip it when
        # the model's rows are the catalog's (-1, "no result", stays -1 either way)
        rows = ids if model.same_rows else np.where(ids >= 0, model.catalog_rows[np.maximum(ids, 0)], -1)
        return Candidates(rows, scores, np.full(rows.size, source, np.int8), n >= model.items)  # FAISS: float32

    def _for_you(self, ctx: _Context) -> Callable[[int], Candidates]:
        model, s, params = ctx.model, ctx.q.shopper, self.for_you
        if model is None:
            return lambda n: Candidates.empty()
        recent = self.catalog.rows(s.recent)
        purchased = self.catalog.rows(s.purchased)
        head = (session_candidates(model, recent, SRC_FOR_YOU, n_recent=params.session_n_recent,
                                   recency_decay=params.session_recency_decay,
                                   repeat_weight=params.session_repeat_weight
                                   or float(model.meta.get("repeat_weight", SESSION_REPEAT_WEIGHT)))
                if params.session_neighbours else Candidates.empty())
        vector = for_you_query_vector(model, recent, purchased, params)
        if not vector.any():
            return lambda n: head
        return lambda n: head.then(self._search(model, vector, n, SRC_FOR_YOU))

    def _anchor_vector(self, model: Model | None, rows: np.ndarray) -> np.ndarray | None:
        if model is None:
            return None
        mrows = model.rows_for(rows)
        mrows = mrows[mrows >= 0]
        if not mrows.size:
            return None
        v = model.vectors[mrows].sum(axis=0)
        norm = float(np.linalg.norm(v))
        return (v / norm).astype(np.float32) if norm > 0 else None

    def _similar(self, ctx: _Context) -> Callable[[int], Candidates]:
        model = ctx.model
        anchor = np.array([ctx.anchor_row], np.int64)
        head = session_candidates(model, anchor, SRC_SIMILAR, repeat_weight=0.0) if model else Candidates.empty()
        vector = self._anchor_vector(model, anchor)
        if vector is None or model is None:
            if len(head):
                return lambda n: head
            # not in the model: what is bought with it, then its category's trending
            return self._together(ctx, anchor, vectors=False)
        return lambda n: head.then(self._search(model, vector, n, SRC_SIMILAR))

    def _together(self, ctx: _Context, rows: np.ndarray, *, vectors: bool = True) -> Callable[[int], Candidates]:
        together_rows, weights = self.signals.together.top(rows.tolist(), MAX_CANDIDATES)
        top = float(weights.max()) if weights.size else 1.0
        primary = Candidates(together_rows, (TOGETHER_SCORE_BASE + weights / top).astype(np.float32),
                             np.full(together_rows.size, SRC_TOGETHER, np.int8), True)
        vector = self._anchor_vector(ctx.model, rows) if vectors else None
        source = SRC_SIMILAR if ctx.q.strategy != "CART_COMPLEMENTS" else SRC_CART
        model = ctx.model

        def retrieve(n: int) -> Candidates:
            head = Candidates(primary.rows[:n], primary.scores[:n], primary.sources[:n], n >= len(primary))
            if vector is None or model is None:
                return head
            return head.then(self._search(model, vector, n, source))

        return retrieve

    def _up_sell(self, ctx: _Context) -> Callable[[int], Candidates]:
        cat, model = self.catalog, ctx.model
        anchor = ctx.anchor_row
        category = int(cat.category[anchor])
        ctx.min_price = max(ctx.min_price, float(np.nextafter(cat.price[anchor], np.inf)))
        budget = ctx.q.shopper.budget
        if budget > 0:
            cap = budget * self.budget_tolerance
            ctx.max_price = min(ctx.max_price, cap) if ctx.max_price > 0 else cap
        if category >= 0:
            ctx.include_categories = (np.array([category], np.int32) if ctx.include_categories is None
                                      else ctx.include_categories[ctx.include_categories == category])
            if not ctx.include_categories.size:
                ctx.include_categories = np.array([-2], np.int32)  # asked-for categories exclude the anchor's
        vector = self._anchor_vector(model, np.array([anchor]))
        pool = cat.category_rows(category) if category >= 0 else None
        if pool is not None and pool.size <= UPSELL_SCAN_MAX:
            if vector is not None and model is not None:
                mrows = model.rows_for(pool)
                scores = np.where(mrows >= 0, model.vectors[np.maximum(mrows, 0)] @ vector, -1.0)
            else:
                scores = self._trending_scores(pool)
            order = np.argsort(-scores, kind="stable")
            rows, scores = pool[order], scores[order].astype(np.float32)
            fixed = Candidates(rows, scores, np.full(rows.size, SRC_UPSELL, np.int8), True)
            return lambda n: fixed
        if vector is None or model is None:
            names = (cat.category_names[category],) if category >= 0 else ctx.q.rules.include_categories
            return lambda n: self._trending(names, n, ctx)
        return lambda n: self._search(model, vector, n, SRC_UPSELL)

    def _recent(self, ctx: _Context) -> Callable[[int], Candidates]:
        rows = self.catalog.rows(ctx.q.shopper.recent)
        rows = rows[rows >= 0]
        _, first = np.unique(rows, return_index=True)
        rows = rows[np.sort(first)]
        scores = (1.0 - np.arange(rows.size) / (rows.size + 1.0)).astype(np.float32)
        fixed = Candidates(rows, scores, np.full(rows.size, SRC_RECENT, np.int8), True)
        return lambda n: fixed

    def _trending_scores(self, rows: np.ndarray) -> np.ndarray:
        values = self.signals.trending.items
        out = np.zeros(rows.size, np.float64)
        ok = rows < values.size
        out[ok] = values[rows[ok]]
        top = out.max(initial=0.0)
        return out / top if top > 0 else out

    def _trending(self, categories: tuple[str, ...], n: int, ctx: _Context) -> Candidates:
        """Top n by decayed popularity (overall, or among `categories`), scores in [0, 1]."""
        cat = self.catalog
        total = len(cat)
        if categories:
            ids = cat.category_ids(categories)
            pools = [cat.category_rows(int(c)) for c in ids if c >= 0]
            pool = np.concatenate(pools) if pools else np.zeros(0, np.int64)
            scores = self._trending_scores(pool)
            take = min(n, pool.size)
            part = np.argpartition(-scores, take - 1)[:take] if take < pool.size else np.arange(pool.size)
            order = part[np.lexsort((pool[part], -scores[part]))]
            rows, scores = pool[order], scores[order]
            complete = take >= pool.size
        else:
            rows, scores = self._trending_top(min(n, total))
            complete = n >= total
        return Candidates(rows.astype(np.int64), scores.astype(np.float32),
                          np.full(rows.size, SRC_TRENDING, np.int8), complete)

    def _trending_top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n most popular rows, cached. Small catalogs re-rank whenever a count changed; above
        TRENDING_INLINE_MAX_ITEMS the cache may be up to TRENDING_REFRESH_MS old (the service
        refreshes it in a worker thread), unless it is too short or the catalog grew."""
        counter = self.signals.trending
        total = len(self.catalog)
        c = self._trending_cache
        if (c is not None and n <= c.rows.size and c.total == total
                and (c.version == counter.version
                     or (total > TRENDING_INLINE_MAX_ITEMS and now_ms() - c.at_ms < TRENDING_REFRESH_MS))):
            return c.rows[:n], c.scores[:n]
        self._trending_cache = c = self.compute_trending(n)
        return c.rows[:n], c.scores[:n]

    def trending_is_stale(self) -> bool:
        c = self._trending_cache
        return c is None or c.version != self.signals.trending.version or c.total != len(self.catalog)

    def compute_trending(self, n: int = 0) -> _TrendingCache:
        """Rank the trending pool (safe in a worker thread: it reads a copy of the counts)."""
        counter = self.signals.trending
        version, total, now = counter.version, len(self.catalog), now_ms()
        size = max(n, min(TRENDING_POOL, total))
        values = counter.values(counter.ref_ms, total)
        part = np.argpartition(-values, size - 1)[:size] if 0 < size < total else np.arange(total)
        order = part[np.lexsort((part, -values[part]))]
        top = values[order[0]] if order.size and values[order[0]] > 0 else 1.0
        return _TrendingCache(version, total, now, order.astype(np.int64), values[order] / top)

    def set_trending(self, cache: _TrendingCache) -> None:
        if cache.total == len(self.catalog):
            self._trending_cache = cache

    def _items(self, ctx: _Context, cands: Candidates, ranked: rr.Ranked) -> list[Item]:
        cat = self.catalog
        rows = cands.rows[ranked.positions]
        sources = cands.sources[ranked.positions].tolist()
        prices = cat.price[rows].tolist()
        stocks = cat.stock[rows].tolist()
        categories = cat.category[rows].tolist()
        names = cat.category_names
        ids, titles, brands = cat.ids, cat.titles, cat.brands
        out = []
        for t, (row, score, code) in enumerate(zip(rows.tolist(), ranked.scores.tolist(), ranked.reasons.tolist(),
                                                   strict=True)):
            category = names[categories[t]] if categories[t] >= 0 else ""
            out.append(Item(ids[row], score, titles[row], category, prices[t], stocks[t], brands[row],
                            self._reason(ctx, sources[t], code, category)))
        return out

    def _reason(self, ctx: _Context, source: int, code: int, category: str) -> str:
        if code == rr.REASON_CATEGORY:
            return f"because you like {category}"
        if code == rr.REASON_BUDGET and source in (SRC_FOR_YOU, SRC_UPSELL, SRC_TRENDING):
            return "within your budget"
        anchor = ctx.anchor_name(self.catalog)
        if source == SRC_FOR_YOU:
            return "based on your recent activity"
        if source == SRC_SIMILAR:
            return f"similar to {anchor}"
        if source == SRC_TOGETHER:
            return "goes with your cart" if ctx.q.strategy == "CART_COMPLEMENTS" else f"often bought with {anchor}"
        if source == SRC_CART:
            return "goes with your cart"
        if source == SRC_UPSELL:
            return f"a step up from {anchor}"
        if source == SRC_RECENT:
            return "you viewed this recently"
        if ctx.q.rules.include_categories and category:
            return f"popular in {category}"
        return "trending now"


@dataclass(frozen=True)
class _TrendingCache:
    version: int
    total: int
    at_ms: int
    rows: np.ndarray
    scores: np.ndarray


class _Context:
    """Per-request state shared by the retriever and the kernel call."""

    def __init__(self, q: Query, model: Model | None, anchor_row: int, cart_rows: np.ndarray,
                 excluded: np.ndarray, catalog: Catalog) -> None:
        self.q = q
        self.model = model
        self.anchor_row = anchor_row
        self.cart_rows = cart_rows
        self.excluded = excluded
        self.min_price = 0.0
        self.max_price = 0.0
        self.include_categories: np.ndarray | None = None
        self.reset_rules(catalog)

    def reset_rules(self, catalog: Catalog) -> None:
        """Back to the request's own price and category rules (undoing a strategy's narrowing)."""
        self.min_price = self.q.rules.min_price
        self.max_price = self.q.rules.max_price
        self.include_categories = (catalog.category_ids(self.q.rules.include_categories)
                                   if self.q.rules.include_categories else None)

    def anchor_name(self, catalog: Catalog) -> str:
        if self.anchor_row < 0:
            return "your cart"
        return catalog.titles[self.anchor_row] or catalog.ids[self.anchor_row]
