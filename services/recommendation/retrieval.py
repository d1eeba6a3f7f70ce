"""Retrieval: one retriever per strategy, each a function n -> Candidates (up to about n).

FOR_YOU details are kept in named functions and `ForYouParams` so the offline evaluation can
tune them: `for_you_query_vector`, `for_you_category_boost`, `for_you_candidate_count`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scoring.session_knn import DEFAULT_N_RECENT as SESSION_N_RECENT
from scoring.session_knn import DEFAULT_RECENCY_DECAY as SESSION_RECENCY_DECAY
from scoring.session_knn import DEFAULT_REPEAT_WEIGHT as SESSION_REPEAT_WEIGHT
from scoring.session_knn import session_scores
from scoring.shopper import DEFAULT_CATEGORY_WEIGHT, DEFAULT_PURCHASE_WEIGHT, DEFAULT_RECENCY_DECAY, shopper_vector
from services.recommendation.candidates import (
    SRC_CART,
    SRC_FOR_YOU,
    SRC_RECENT,
    SRC_SIMILAR,
    SRC_TOGETHER,
    SRC_UPSELL,
    Candidates,
    RequestState,
)
from services.recommendation.catalog import Catalog
from services.recommendation.config import MAX_CANDIDATES, MAX_RECENT_IDS, TOGETHER_SCORE_BASE, UPSELL_SCAN_MAX
from services.recommendation.model import Model
from services.recommendation.second_stage import second_stage
from services.recommendation.signals import Signals
from services.recommendation.trending import Trending

Retriever = Callable[[int], Candidates]


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
    second_stage: bool = True   # the learned ranker re-orders the session head (when the model has one)

    def repeat_weight(self, model: Model) -> float:
        return self.session_repeat_weight or float(model.meta.get("repeat_weight", SESSION_REPEAT_WEIGHT))


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


def search(model: Model, query: np.ndarray, n: int, source: int) -> Candidates:
    """The n nearest items of `query` in the model's index, as catalog rows."""
    n = max(1, min(n, model.items))
    scores, ids = model.index.search(query, n)
    ids, scores = ids[0], scores[0]
    # a gather into a catalog-sized array costs a cache miss per result at 1M items: skip it when
    # the model's rows are the catalog's (-1, "no result", stays -1 either way)
    rows = ids if model.same_rows else np.where(ids >= 0, model.catalog_rows[np.maximum(ids, 0)], -1)
    return Candidates(rows, scores, np.full(rows.size, source, np.int8), n >= model.items)  # FAISS: float32


def anchor_vector(model: Model | None, rows: np.ndarray) -> np.ndarray | None:
    """The unit mean vector of catalog `rows` in the model, or None when none of them is in it."""
    if model is None:
        return None
    mrows = model.rows_for(rows)
    mrows = mrows[mrows >= 0]
    if not mrows.size:
        return None
    v = model.vectors[mrows].sum(axis=0)
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32) if norm > 0 else None


class Retrieval:
    """The retriever of each strategy, over the catalog, the signals and the trending pool."""

    def __init__(self, catalog: Catalog, signals: Signals, trending: Trending) -> None:
        self.catalog = catalog
        self.signals = signals
        self.trending = trending

    def for_you(self, ctx: RequestState, params: ForYouParams) -> Retriever:
        model, s = ctx.model, ctx.q.shopper
        if model is None:
            return lambda n: Candidates.empty()
        recent = self.catalog.rows(s.recent)
        purchased = self.catalog.rows(s.purchased)
        head = (session_candidates(model, recent, SRC_FOR_YOU, n_recent=params.session_n_recent,
                                   recency_decay=params.session_recency_decay,
                                   repeat_weight=params.repeat_weight(model))
                if params.session_neighbours else Candidates.empty())
        vector = for_you_query_vector(model, recent, purchased, params)
        if params.second_stage and model.ranker is not None:
            head = second_stage(model, self.catalog, s, vector, head, params)
        if not vector.any():
            return lambda n: head
        return lambda n: head.then(search(model, vector, n, SRC_FOR_YOU))

    def similar(self, ctx: RequestState) -> Retriever:
        model = ctx.model
        anchor = np.array([ctx.anchor_row], np.int64)
        head = session_candidates(model, anchor, SRC_SIMILAR, repeat_weight=0.0) if model else Candidates.empty()
        vector = anchor_vector(model, anchor)
        if vector is None or model is None:
            if len(head):
                return lambda n: head
            # not in the model: what is bought with it, then its category's trending
            return self.together(ctx, anchor, vectors=False)
        return lambda n: head.then(search(model, vector, n, SRC_SIMILAR))

    def together(self, ctx: RequestState, rows: np.ndarray, *, vectors: bool = True) -> Retriever:
        together_rows, weights = self.signals.together.top(rows.tolist(), MAX_CANDIDATES)
        top = float(weights.max()) if weights.size else 1.0
        primary = Candidates(together_rows, (TOGETHER_SCORE_BASE + weights / top).astype(np.float32),
                             np.full(together_rows.size, SRC_TOGETHER, np.int8), True)
        vector = anchor_vector(ctx.model, rows) if vectors else None
        source = SRC_SIMILAR if ctx.q.strategy != "CART_COMPLEMENTS" else SRC_CART
        model = ctx.model

        def retrieve(n: int) -> Candidates:
            head = Candidates(primary.rows[:n], primary.scores[:n], primary.sources[:n], n >= len(primary))
            if vector is None or model is None:
                return head
            return head.then(search(model, vector, n, source))

        return retrieve

    def up_sell(self, ctx: RequestState, budget_tolerance: float) -> Retriever:
        cat, model = self.catalog, ctx.model
        anchor = ctx.anchor_row
        category = int(cat.category[anchor])
        ctx.min_price = max(ctx.min_price, float(np.nextafter(cat.price[anchor], np.inf)))
        budget = ctx.q.shopper.budget
        if budget > 0:
            cap = budget * budget_tolerance
            ctx.max_price = min(ctx.max_price, cap) if ctx.max_price > 0 else cap
        if category >= 0:
            ctx.include_categories = (np.array([category], np.int32) if ctx.include_categories is None
                                      else ctx.include_categories[ctx.include_categories == category])
            if not ctx.include_categories.size:
                ctx.include_categories = np.array([-2], np.int32)  # asked-for categories exclude the anchor's
        vector = anchor_vector(model, np.array([anchor]))
        pool = cat.category_rows(category) if category >= 0 else None
        if pool is not None and pool.size <= UPSELL_SCAN_MAX:
            if vector is not None and model is not None:
                mrows = model.rows_for(pool)
                scores = np.where(mrows >= 0, model.vectors[np.maximum(mrows, 0)] @ vector, -1.0)
            else:
                scores = self.trending.scores(pool)
            order = np.argsort(-scores, kind="stable")
            rows, scores = pool[order], scores[order].astype(np.float32)
            fixed = Candidates(rows, scores, np.full(rows.size, SRC_UPSELL, np.int8), True)
            return lambda n: fixed
        if vector is None or model is None:
            names = (cat.category_names[category],) if category >= 0 else ctx.q.rules.include_categories
            return lambda n: self.trending.candidates(names, n)
        return lambda n: search(model, vector, n, SRC_UPSELL)

    def recent(self, ctx: RequestState) -> Retriever:
        rows = self.catalog.rows(ctx.q.shopper.recent)
        rows = rows[rows >= 0]
        _, first = np.unique(rows, return_index=True)
        rows = rows[np.sort(first)]
        scores = (1.0 - np.arange(rows.size) / (rows.size + 1.0)).astype(np.float32)
        fixed = Candidates(rows, scores, np.full(rows.size, SRC_RECENT, np.int8), True)
        return lambda n: fixed
