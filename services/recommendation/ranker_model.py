"""The learned second stage: train a LightGBM lambdarank ranker at Train time, save it in the model
directory, load it with the model (no service imports here, so model.py can load it).

Training (`train_ranker`, blocking; `scoring.ranking.cases` has the protocol): the newest
RANKER_VALIDATION_FRACTION of the training sessions are held out in time order, the first stage is
rebuilt on the older ones, each held-out step is a case with the first stage's top RANKER_CANDIDATES
candidates and label 1 on the true next item. The older 80 % of those cases (in time order) train,
the newest 20 % stop the boosting early (NDCG@20). The test data of an evaluation is never seen.
Deterministic for a fixed seed (LightGBM `deterministic`, fixed threads).

Files beside the model: `ranker.txt` (the booster), `ranker_stats.npz` (popularity and trend per
item over all training sessions, with the product id of each row, remapped to catalog rows at load).
A model directory without them loads and serves the first stage alone.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from scoring.item_vectors import train_item_vectors
from scoring.ranking.cases import ItemStats, build_cases, item_stats, prefix_cases, split
from scoring.ranking.features import FEATURES
from scoring.session_knn import build_neighbours

log = logging.getLogger(__name__)

try:  # LightGBM's wheel links the system OpenMP (libgomp1); without it the service serves the first stage
    import lightgbm as lgb
except (ImportError, OSError) as err:  # pragma: no cover - depends on the image
    lgb = None  # type: ignore[assignment]
    LIGHTGBM_ERROR = f"{type(err).__name__}: {err}"
else:
    LIGHTGBM_ERROR = ""

RANKER_FILE = "ranker.txt"
RANKER_STATS_FILE = "ranker_stats.npz"
RANKER_META_FILE = "ranker.json"
RANKER_CANDIDATES = 50             # first-stage candidates the ranker orders (FOR_YOU head, training cases)
RANKER_VALIDATION_FRACTION = 0.1   # newest share of the training sessions that makes the ranker's cases
RANKER_MAX_CASES = 20_000          # held-out steps used (a seeded sample; bounds Train time on 2 cores)
RANKER_MIN_CASES = 2_000           # fewer held-out steps: too little to learn from, the first stage serves alone
RANKER_ROUNDS = 300                # boosting rounds at most (early stopping on the newest cases)
RANKER_EARLY_STOP = 30
RANKER_VECTOR_DIM = 32             # item vectors rebuilt on the older sessions for the similarity feature
RANKER_THREADS = 2
RANKER_SEED = 0
RANKER_PARAMS: dict[str, Any] = {
    "objective": "lambdarank", "metric": "ndcg", "eval_at": [20], "learning_rate": 0.1, "num_leaves": 15,
    "min_data_in_leaf": 200, "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1,
    "lambdarank_truncation_level": 20, "verbose": -1, "deterministic": True, "force_row_wise": True,
}


@dataclass(frozen=True)
class LearnedRanker:
    booster: Any   # lightgbm.Booster
    stats: ItemStats                 # over catalog rows
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if not x.shape[0]:
            return np.zeros(0, np.float64)
        return np.asarray(self.booster.predict(x, num_threads=1), np.float64)

    def save(self, directory: Path, ids: Sequence[str]) -> None:
        self.booster.save_model(str(directory / RANKER_FILE))
        n = self.stats.popularity.size
        np.savez(directory / RANKER_STATS_FILE, popularity=self.stats.popularity, trend=self.stats.trend,
                 ids=np.asarray(list(ids)[:n], dtype=str))
        (directory / RANKER_META_FILE).write_text(json.dumps(self.meta, indent=2))


def load_ranker(directory: Path, row_of: dict[str, int], n_catalog: int) -> LearnedRanker | None:
    """The ranker saved beside a model, its statistics on the current catalog rows; None without one."""
    if not (directory / RANKER_FILE).is_file():
        return None
    if lgb is None:
        log.warning("the model has a ranker but lightgbm cannot load (%s): first stage only", LIGHTGBM_ERROR)
        return None
    booster = lgb.Booster(model_file=str(directory / RANKER_FILE))
    with np.load(directory / RANKER_STATS_FILE) as f:
        pop, trend, ids = f["popularity"], f["trend"], f["ids"]
    rows = np.fromiter((row_of.get(str(p), -1) for p in ids), np.int64, len(ids))
    size = max(n_catalog, int(rows.max(initial=-1)) + 1)
    popularity, trending = np.zeros(size, np.float32), np.zeros(size, np.float32)
    ok = rows >= 0
    popularity[rows[ok]], trending[rows[ok]] = pop[ok], trend[ok]
    meta_file = directory / RANKER_META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return LearnedRanker(booster, ItemStats(popularity, trending), meta)


class _Progress:
    """tqdm bar over boosting rounds (a LightGBM callback)."""

    def __init__(self, total: int, show: bool) -> None:
        self.bar = tqdm(total=total, desc="[train] ranker", unit="round", disable=not show, leave=False)

    def __call__(self, env: Any) -> None:
        self.bar.update(1)


def train_ranker(sessions: Sequence[np.ndarray], n_items: int, *, repeat_weight: float, recency_decay: float,
                 purchase_weight: float, category: np.ndarray | None = None, seed: int = RANKER_SEED,
                 max_cases: int = RANKER_MAX_CASES, rounds: int = RANKER_ROUNDS,
                 early_stop: int = RANKER_EARLY_STOP,
                 show_progress: bool | None = None) -> LearnedRanker | None:
    """A ranker learned from `sessions` (catalog rows, oldest first), or None when they are too few.
    `early_stop` 0: all `rounds` trees (benchmarks: the largest model predict must afford)."""
    if lgb is None:
        log.warning("no ranker: lightgbm cannot load (%s)", LIGHTGBM_ERROR)
        return None
    started = time.perf_counter()
    sessions = [np.asarray(s, np.int64) for s in sessions if len(s) >= 1]
    older, held = split(sessions, RANKER_VALIDATION_FRACTION)
    prefixes, targets = prefix_cases(held, max_cases, seed)
    if len(prefixes) < RANKER_MIN_CASES or not older:
        log.info("no ranker: %d held-out steps (at least %d needed)", len(prefixes), RANKER_MIN_CASES)
        return None
    table = build_neighbours(older, n_items)
    stats = item_stats(older, n_items)
    vectors = train_item_vectors(older, n_items, dim=RANKER_VECTOR_DIM, seed=seed)
    cases = build_cases(prefixes, targets, table, stats, vectors, n_candidates=RANKER_CANDIDATES,
                        repeat_weight=repeat_weight, recency_decay=recency_decay, purchase_weight=purchase_weight,
                        category=category)
    n_groups = cases.groups.size
    if n_groups < RANKER_MIN_CASES:
        log.info("no ranker: the first stage found the next item in only %d held-out steps", n_groups)
        return None
    cut_group = int(n_groups * 0.8)
    cut = int(cases.groups[:cut_group].sum())
    params = dict(RANKER_PARAMS, seed=seed, num_threads=RANKER_THREADS)
    train = lgb.Dataset(cases.x[:cut], cases.y[:cut], group=cases.groups[:cut_group],
                        feature_name=list(FEATURES), free_raw_data=False)
    valid = lgb.Dataset(cases.x[cut:], cases.y[cut:], group=cases.groups[cut_group:], reference=train)
    progress = _Progress(rounds, sys.stderr.isatty() if show_progress is None else show_progress)
    evals: dict[str, Any] = {}
    try:
        booster = lgb.train(params, train, num_boost_round=rounds, valid_sets=[valid], valid_names=["valid"],
                            callbacks=[progress, lgb.record_evaluation(evals),
                                       *([lgb.early_stopping(early_stop, verbose=False)] if early_stop else [])])
    finally:
        progress.bar.close()
    ndcg = evals.get("valid", {}).get("ndcg@20", [0.0])
    meta = {"cases": int(cases.total_cases), "first_stage_recall": cases.recall, "groups": int(n_groups),
            "pairs": int(cases.x.shape[0]), "rounds": int(booster.best_iteration or booster.current_iteration()),
            "valid_ndcg20": float(max(ndcg)), "seconds": time.perf_counter() - started, "seed": seed,
            "candidates": RANKER_CANDIDATES}
    log.info("ranker trained: %s", meta)
    return LearnedRanker(booster, item_stats(sessions, n_items), meta)
