"""Rank's learned scorer: `LearnedScorer` (a `rank.ListScorer`) orders the caller's list by the
ranker (`ranker_model.LearnedRanker`), the list put in first-stage order first so its features look like
those it was trained on. Without a ranker in the model it falls back to the first stage. FOR_YOU's use
of the same ranker is `second_stage`.
"""

from __future__ import annotations

import numpy as np

from scoring.list_rank import gather
from scoring.session_knn import session_scores
from services.recommendation.rank import FirstStageScorer, ListScores, RankInputs
from services.recommendation.ranker_model import RANKER_CANDIDATES
from services.recommendation.retrieval import for_you_query_vector
from services.recommendation.second_stage import predict, viewed_rows


class LearnedScorer:
    """Rank's scorer: the first stage orders the list, then the ranker re-orders the items the first
    stage retrieved from the shopper's views (positive session score), the only kind it learned from;
    they stay above the others, which keep the first stage's order. Without a ranker, or without
    recent views: the first stage alone."""

    name = "learned"

    def __init__(self, fallback: FirstStageScorer | None = None) -> None:
        self.fallback = fallback or FirstStageScorer()

    def score(self, inputs: RankInputs) -> ListScores:
        model = inputs.model
        first = self.fallback.score(inputs)
        rows, params = inputs.rows, inputs.for_you
        recent = viewed_rows(inputs.catalog, inputs.shopper)[: params.session_n_recent]
        if model is None or model.ranker is None or model.neighbours is None or not (recent >= 0).any():
            return first
        cand, scores = session_scores(model.neighbours, recent, n_recent=params.session_n_recent,
                                      recency_decay=params.session_recency_decay,
                                      repeat_weight=params.repeat_weight(model))
        if not scores.size:
            return first
        session = gather(rows, cand, scores / scores[0])
        retrieved = np.flatnonzero(session > 0)
        if not retrieved.size:
            return first
        retrieved = retrieved[np.argsort(-session[retrieved], kind="stable")][:RANKER_CANDIDATES]
        vector = for_you_query_vector(model, inputs.catalog.rows(inputs.shopper.recent),
                                      inputs.catalog.rows(inputs.shopper.purchased), params)
        pred, _ = predict(model.ranker, model, inputs.catalog, rows[retrieved], session[retrieved], recent,
                           vector, inputs.shopper.budget)
        out = first.scores.copy()
        top = float(out.max(initial=0.0))
        order = np.argsort(-pred, kind="stable")
        # rank-based scores above every first-stage score, 1 apart from top to bottom
        out[retrieved[order]] = (top + 1.0 + 1.0 - np.arange(order.size) / order.size).astype(np.float32)
        personal = first.personal.copy()
        personal[retrieved] = True
        return ListScores(out, personal)
