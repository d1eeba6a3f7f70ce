"""The learned second stage for FOR_YOU (`ranker_model.LearnedRanker`, saved beside the model).

`second_stage` re-orders the first RANKER_CANDIDATES session-neighbour candidates by the ranker's
prediction; they keep scores in (2, 3], above the rest of the head (1..2) and the FAISS fill-in, so the
kernel's constraints and category boost act on them as before. Without a ranker in the model the head
is returned unchanged.

The shopper's `recent_view_counts` (the profile's de-duplicated recent views with their counts) are
expanded back into repeated views, the form the ranker was trained on. Rank's scorer that uses the
same predictions is `ranker.LearnedScorer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from scoring.ranking.features import Cases, ItemTables, features
from scoring.session_knn import Neighbours
from services.recommendation.candidates import Candidates
from services.recommendation.catalog import Catalog
from services.recommendation.model import Model
from services.recommendation.query import Shopper
from services.recommendation.ranker_model import RANKER_CANDIDATES, LearnedRanker

if TYPE_CHECKING:  # retrieval calls second_stage; its parameters are only annotations here
    from services.recommendation.retrieval import ForYouParams

SECOND_STAGE_BASE = 2.0   # re-ordered head scores are in (2, 3]: above the first stage's 1 + s / max s
# A view count repeats its row at most this often: the counts come from the caller (up to 2^31), and
# np.repeat of a hostile count allocated billions of rows and stopped the service for a minute (#19).
MAX_VIEW_REPEATS = 100


def viewed_rows(catalog: Catalog, shopper: Shopper) -> np.ndarray:
    """Catalog rows of the recent views, newest first, each repeated by its view count."""
    rows = catalog.rows(shopper.recent)
    counts = shopper.recent_counts
    if counts and len(counts) == rows.size:
        rows = np.repeat(rows, np.clip(np.asarray(counts, np.int64), 1, MAX_VIEW_REPEATS))
    return rows


def _item_tables(model: Model, ranker: LearnedRanker, catalog: Catalog) -> ItemTables:
    nb = model.neighbours
    assert nb is not None
    return ItemTables(nb.indptr, nb.indices, nb.weights, model.vectors, model.model_row, ranker.stats.popularity,
                      ranker.stats.trend, catalog.price, catalog.stock, catalog.category)


def _one_case(rows: np.ndarray, first: np.ndarray, recent: np.ndarray, vector: np.ndarray, budget: float) -> Cases:
    return Cases(np.array([0, rows.size], np.int64), rows, first.astype(np.float32),
                 np.array([0, recent.size], np.int64), recent, vector.reshape(1, -1).astype(np.float32),
                 np.array([budget], np.float32))


def predict(ranker: LearnedRanker, model: Model, catalog: Catalog, rows: np.ndarray, first: np.ndarray,
             recent: np.ndarray, vector: np.ndarray, budget: float) -> tuple[np.ndarray, np.ndarray]:
    x = features(_one_case(rows, first, recent, vector, budget), _item_tables(model, ranker, catalog))
    return ranker.predict(x), x


def second_stage(model: Model, catalog: Catalog, shopper: Shopper, vector: np.ndarray, head: Candidates,
                 params: ForYouParams) -> Candidates:
    """`head` (session candidates, best first) with its first RANKER_CANDIDATES re-ordered by the ranker."""
    ranker = model.ranker
    if ranker is None or model.neighbours is None or not len(head):
        return head
    n = min(len(head), RANKER_CANDIDATES)
    recent = viewed_rows(catalog, shopper)[: params.session_n_recent]
    pred, _ = predict(ranker, model, catalog, head.rows[:n], head.scores[:n] - 1.0, recent, vector,
                       shopper.budget)
    order = np.argsort(-pred, kind="stable")
    scores = np.empty(len(head), np.float32)
    scores[:n] = SECOND_STAGE_BASE + 1.0 - np.arange(n, dtype=np.float32) / n
    scores[n:] = head.scores[n:]
    rows = np.concatenate([head.rows[:n][order], head.rows[n:]])
    sources = np.concatenate([head.sources[:n][order], head.sources[n:]])
    return Candidates(rows, scores, sources, head.complete)


def warm_up_ranker(table: Neighbours) -> None:
    """Compile (or load) the features kernel for the catalog's dtypes, off the request path."""
    cases = _one_case(np.array([0, 1], np.int64), np.ones(2, np.float32), np.array([1], np.int64),
                      np.zeros(2, np.float32), 0.0)
    features(cases, ItemTables(table.indptr, table.indices, table.weights, np.zeros((3, 2), np.float32),
                               np.arange(3, dtype=np.int64), np.zeros(3, np.float32), np.zeros(3, np.float32),
                               np.zeros(3, np.float64), np.ones(3, np.int32), np.zeros(3, np.int32)))
