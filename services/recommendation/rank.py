"""Rank: put a list the caller already has (search results, a category page) in the best order for
one shopper, under the same constraints as Recommend.

Flow of `ListRanker.rank`:
1. `query.validate_rank`; the list de-duplicated (first occurrence wins); ids not in the catalog
   are dropped and counted (`Result.unknown_products`): search indexes often run ahead of the catalog.
2. The scorer (`ListScorer`) scores every known item for the shopper.
3. The re-ranking kernel drops what the constraints rule out (stock, prices, categories,
   exclusions, purchased), adds the category-affinity boost, demotes above-budget prices, applies
   `max_per_category` and keeps k (0 = all).

The scorer is pluggable: `FirstStageScorer` (caller's order + session neighbours + shopper vector +
popularity, `scoring.list_rank`) is the default; a learned second stage implements `ListScorer` and
is set on `ListRanker.scorer` (the service's `list_ranker`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from scoring import rerank as rr
from scoring.list_rank import ListWeights, gather, list_scores
from scoring.session_knn import session_scores
from services.recommendation.candidates import SRC_FOR_YOU, SRC_LIST, Candidates, RequestState
from services.recommendation.catalog import Catalog
from services.recommendation.config import RANK_CATEGORY_WEIGHT, RANK_PERSONAL_MIN_SIMILARITY, RANK_WEIGHTS
from services.recommendation.engine import Recommender, Result
from services.recommendation.metrics import RANK_UNKNOWN_PRODUCTS
from services.recommendation.model import Model
from services.recommendation.query import Query, RankQuery, Shopper, validate_rank
from services.recommendation.retrieval import ForYouParams, for_you_category_boost, for_you_query_vector
from services.recommendation.signals import Signals
from services.recommendation.trending import Trending

STRATEGY_USED = "RANK"


@dataclass(frozen=True)
class RankInputs:
    """What a scorer may read for one Rank request."""

    rows: np.ndarray          # int64 catalog rows of the known products, in the caller's order, distinct
    shopper: Shopper
    model: Model | None       # the model in use (None before the first Train)
    catalog: Catalog
    signals: Signals
    trending: Trending
    for_you: ForYouParams     # the service's FOR_YOU tunables (shopper vector, session neighbours)


class ListScores(NamedTuple):
    scores: np.ndarray        # float32, one per input row; higher is better
    personal: np.ndarray      # bool, one per input row: the shopper's own signals moved it


class ListScorer(Protocol):
    """Scores a caller's list for one shopper. Constraints, the category boost, the budget demotion
    and top k are applied by the kernel afterwards, so a scorer only orders."""

    name: str

    def score(self, inputs: RankInputs) -> ListScores: ...


class FirstStageScorer:
    """The caller's order as the prior, moved by the shopper's session neighbours, the similarity to
    the shopper vector and popularity (`scoring.list_rank`)."""

    name = "first_stage"

    def __init__(self, weights: ListWeights = RANK_WEIGHTS) -> None:
        self.weights = weights

    def score(self, inputs: RankInputs) -> ListScores:
        rows, model, n = inputs.rows, inputs.model, int(inputs.rows.size)
        session = np.zeros(n, np.float64)
        similarity = np.zeros(n, np.float64)
        if model is not None and (inputs.shopper.recent or inputs.shopper.purchased):
            recent = inputs.catalog.rows(inputs.shopper.recent)
            params = inputs.for_you
            if model.neighbours is not None and recent.size:
                cand, scores = session_scores(model.neighbours, recent, n_recent=params.session_n_recent,
                                              recency_decay=params.session_recency_decay,
                                              repeat_weight=params.repeat_weight(model))
                session = gather(rows, cand, scores)
            vector = for_you_query_vector(model, recent, inputs.catalog.rows(inputs.shopper.purchased), params)
            if vector.any():
                mrows = model.rows_for(rows)
                known = mrows >= 0
                similarity[known] = model.vectors[mrows[known]] @ vector
        popularity = inputs.trending.scores(rows)
        personal = (session > 0) | (similarity >= RANK_PERSONAL_MIN_SIMILARITY)
        return ListScores(list_scores(n, session, similarity, popularity, self.weights), personal)


class ListRanker:
    def __init__(self, recommender: Recommender, scorer: ListScorer | None = None) -> None:
        self.recommender = recommender
        self.scorer: ListScorer = scorer or FirstStageScorer()

    def rank(self, q: RankQuery) -> Result:
        validate_rank(q)
        rec, cat = self.recommender, self.recommender.catalog
        model = rec.model
        version = model.version if model else ""
        ids = list(dict.fromkeys(q.product_ids))
        rows = cat.rows(ids)
        unknown = int((rows < 0).sum())
        if unknown:
            RANK_UNKNOWN_PRODUCTS.inc(unknown)
        rows = rows[rows >= 0]
        if not rows.size:
            return Result([], STRATEGY_USED, True, version, unknown)
        inputs = RankInputs(rows, q.shopper, model, cat, rec.signals, rec.trending, rec.for_you)
        scored = self.scorer.score(inputs)
        if scored.scores.shape != rows.shape or scored.personal.shape != rows.shape:
            raise ValueError(f"scorer {self.scorer.name!r} returned {scored.scores.shape} scores "
                             f"for {rows.size} items")
        sources = np.where(scored.personal, SRC_FOR_YOU, SRC_LIST).astype(np.int8)
        cands = Candidates(rows, np.ascontiguousarray(scored.scores, np.float32), sources, True)
        query = Query(STRATEGY_USED, q.k or int(rows.size), shopper=q.shopper, rules=q.rules)
        excluded = rec.excluded(q.rules, q.shopper)
        ctx = RequestState(query, model, -1, np.zeros(0, np.int64), excluded, cat)
        boost = for_you_category_boost(q.shopper.affinity, cat, RANK_CATEGORY_WEIGHT)
        ranked = rec.kernel(ctx, cands, boost)
        # fallback: nothing about this shopper (signals, affinities) moved any item kept
        personal = bool(scored.personal[ranked.positions].any() or (ranked.reasons == rr.REASON_CATEGORY).any())
        return Result(rec.items(ctx, cands, ranked), STRATEGY_USED, not personal, version, unknown)
