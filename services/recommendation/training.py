"""From sessions to a new model: item vectors, provided embeddings, FAISS index (blocking code).

Vector precedence, per product:
1. A provided `Product.embedding` with exactly the model's dimensions is used as it is
   (L2-normalised): the store knows its products better than a few sessions do.
2. Otherwise the vector learned from sessions (`scoring.item_vectors.train_item_vectors`).
   When some products have provided embeddings and others only learned vectors, the learned
   vectors are mapped into the provided space by a least-squares linear map fitted on the
   products that have both (at least ALIGN_MIN_OVERLAP of them), so every vector in one index
   lives in one space. With too small an overlap the two kinds are mixed as they are.
3. Products with neither (never co-occurring with another product, no embedding) are left out
   of the index; SIMILAR on them falls back to bought-together and trending.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from scoring.index import IndexParams, VectorIndex, build_index
from scoring.item_vectors import train_item_vectors
from scoring.session_knn import DEFAULT_REPEAT_WEIGHT, Neighbours, build_neighbours, tune_repeat_weight
from services.recommendation.config import MAX_SESSION_LENGTH
from vitrine.v1 import common_pb2

log = logging.getLogger(__name__)

ALIGN_MIN_OVERLAP = 16            # products with both kinds of vector needed to align the spaces
TRAIN_SEED = 0
SESSION_EVENT_TYPES = (common_pb2.PRODUCT_VIEW, common_pb2.ADD_TO_CART, common_pb2.PURCHASE)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Trained:
    ids: list[str]             # product id per vector row
    vectors: np.ndarray        # float32 (items, dim), unit rows
    index: VectorIndex
    interactions: int
    learned: int               # rows from sessions
    provided: int              # rows from provided embeddings
    train_seconds: float
    index_seconds: float
    neighbours: Neighbours | None = None   # over catalog rows 0..len(ids)-1
    # Score of an item the shopper already viewed, tuned on this store's own sessions (how often
    # shoppers go back to what they saw differs a lot between stores).
    repeat_weight: float = DEFAULT_REPEAT_WEIGHT


def sessions_from_events(events: Iterable[common_pb2.Event]) -> list[list[str]]:
    """Group product events by (user, session) into lists of product ids in time order."""
    groups: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    for seq, event in enumerate(events):
        if event.type in SESSION_EVENT_TYPES and event.product_id:
            groups[(event.user_id, event.session_id)].append((event.timestamp_ms, seq, event.product_id))
    out = []
    for items in groups.values():
        items.sort()
        out.append([p for _, _, p in items])
    return out


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def train_model(sessions: Sequence[np.ndarray], ids: Sequence[str], embeddings: dict[int, np.ndarray], *,
                dim: int, index_params: IndexParams, progress: Progress | None = None) -> Trained:
    """Learn vectors for catalog rows seen in `sessions` (arrays of catalog rows, oldest first).

    `ids` is the catalog's id list (row -> product id); `embeddings` the provided vectors of
    `dim` dimensions by row.
    """
    report = progress or (lambda stage, fraction: None)
    started = time.perf_counter()
    sessions = [s[-MAX_SESSION_LENGTH:] for s in sessions if len(s)]
    interactions = int(sum(len(s) for s in sessions))
    if sessions:
        flat = np.concatenate(sessions)
        items, inverse = np.unique(flat, return_inverse=True)
        bounds = np.cumsum([len(s) for s in sessions])[:-1]
        compact = np.split(inverse.astype(np.int64), bounds)

        def on_progress(stage: str, fraction: float) -> None:
            report(f"vectors:{stage}", 0.8 * fraction)

        learned = train_item_vectors(compact, len(items), dim=dim, seed=TRAIN_SEED, progress=on_progress)
        if learned.shape != (len(items), dim):
            raise RuntimeError(f"train_item_vectors returned shape {learned.shape}, expected {(len(items), dim)}")
        nonzero = np.linalg.norm(learned, axis=1) > 0
        items, learned = items[nonzero], learned[nonzero]
    else:
        items, learned = np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    provided_rows = np.array(sorted(embeddings), dtype=np.int64)
    provided = (normalise(np.stack([embeddings[int(r)] for r in provided_rows]))
                if provided_rows.size else np.zeros((0, dim), np.float32))
    learned = normalise(learned) if learned.size else learned
    learned_only = ~np.isin(items, provided_rows)
    if provided_rows.size and learned_only.any():
        both = np.isin(items, provided_rows)
        if both.sum() >= ALIGN_MIN_OVERLAP:
            target = provided[np.searchsorted(provided_rows, items[both])]
            mapping, *_ = np.linalg.lstsq(learned[both].astype(np.float64), target.astype(np.float64), rcond=None)
            learned = normalise(learned.astype(np.float64) @ mapping)
        else:
            log.warning("only %d products have both a provided embedding and sessions; vectors of "
                        "the two kinds are mixed without alignment", int(both.sum()))
    rows = np.concatenate([provided_rows, items[learned_only]])
    vectors = np.ascontiguousarray(np.concatenate([provided, learned[learned_only]]), np.float32)
    keep = np.linalg.norm(vectors, axis=1) > 0
    rows, vectors = rows[keep], vectors[keep]
    neighbours = build_neighbours(sessions, len(ids)) if sessions else None
    repeat_weight = tune_repeat_weight(sessions, len(ids))[0] if sessions else DEFAULT_REPEAT_WEIGHT
    train_seconds = time.perf_counter() - started
    report("index", 0.8)
    started = time.perf_counter()

    def on_index(stage: str, fraction: float) -> None:
        report(stage, 0.8 + 0.2 * fraction)

    index = build_index(vectors, index_params, progress=on_index)
    report("done", 1.0)
    return Trained(ids=[ids[int(r)] for r in rows], vectors=vectors, index=index, interactions=interactions,
                   learned=int(learned_only.sum()), provided=int(provided_rows.size),
                   train_seconds=train_seconds, index_seconds=time.perf_counter() - started,
                   neighbours=neighbours, repeat_weight=repeat_weight)
