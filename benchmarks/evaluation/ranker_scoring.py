"""Scoring-level check of the learned second stage on Tmall: first stage (session neighbours +
re-views, as FOR_YOU) vs the LightGBM ranker re-ordering its top RANKER_CANDIDATES, on the test file.

    .venv/bin/python benchmarks/evaluation/ranker_scoring.py [--limit N] [--max-cases M]

The ranker is trained exactly as at `Train` (services.recommendation.ranker_model.train_ranker) on
the training sessions only; the test cases are scored once, nothing is chosen on them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from scoring.item_vectors import train_item_vectors
from scoring.ranking.features import Cases, ItemTables, features
from scoring.session_knn import build_neighbours, session_topk, tune_repeat_weight
from scoring.shopper import DEFAULT_PURCHASE_WEIGHT, DEFAULT_RECENCY_DECAY, shopper_vector
from services.recommendation.ranker_model import RANKER_CANDIDATES, RANKER_MAX_CASES, train_ranker
from vitrine.evaluation.datasets import TMALL_TEST, TMALL_TRAIN, read_sessions, shared_data_dir


def metrics(ranked: np.ndarray, target: np.ndarray, k: int) -> tuple[float, float]:
    hit = ranked[:, :k] == target[:, None]
    found = hit.any(axis=1)
    rr = np.zeros(len(target))
    rr[found] = 1.0 / (np.argmax(hit[found], axis=1) + 1)
    return 100 * float(found.mean()), 100 * float(rr.mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--max-cases", type=int, default=RANKER_MAX_CASES)
    args = ap.parse_args()
    data = shared_data_dir()
    train = [np.asarray([int(x) for x in s], np.int64) for s in read_sessions(data / TMALL_TRAIN)]
    with open(data / TMALL_TEST, encoding="utf-8") as f:
        test = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    if args.limit:
        keep = np.sort(np.random.default_rng(0).choice(len(test), args.limit, replace=False))
        test = [test[i] for i in keep]
    n_items = int(max(s.max() for s in train)) + 1
    t0 = time.perf_counter()
    weight = tune_repeat_weight(train, n_items)[0]
    ranker = train_ranker(train, n_items, repeat_weight=weight, recency_decay=DEFAULT_RECENCY_DECAY,
                          purchase_weight=DEFAULT_PURCHASE_WEIGHT, max_cases=args.max_cases)
    assert ranker is not None
    print(f"ranker trained in {time.perf_counter() - t0:.1f}s: {ranker.meta}")
    table = build_neighbours(train, n_items)
    vectors = train_item_vectors(train, n_items, dim=32, seed=0)
    prefixes = [np.asarray([int(x) for x in p.split()], np.int64)[::-1][:40] for p, _ in test]
    target = np.asarray([int(n) for _, n in test], np.int64)
    idx, sc = session_topk(table, prefixes, RANKER_CANDIDATES, repeat_weight=weight)
    sc = sc / np.maximum(sc[:, :1], 1e-12)   # relative to the best, as the service passes them
    valid = idx >= 0
    groups = valid.sum(axis=1)
    shopper = np.stack([shopper_vector(vectors, p) for p in prefixes]).astype(np.float32)
    cand_ptr = np.zeros(len(test) + 1, np.int64)
    np.cumsum(groups, out=cand_ptr[1:])
    recent_ptr = np.zeros(len(test) + 1, np.int64)
    np.cumsum([p.size for p in prefixes], out=recent_ptr[1:])
    cases = Cases(cand_ptr, idx[valid], sc[valid], recent_ptr, np.concatenate(prefixes), shopper,
                  np.zeros(len(test), np.float32))
    items = ItemTables(table.indptr, table.indices, table.weights, vectors, np.arange(n_items, dtype=np.int64),
                       ranker.stats.popularity, ranker.stats.trend, np.zeros(0, np.float32),
                       np.ones(n_items, np.int64), np.full(n_items, -1, np.int64))
    pred = ranker.predict(features(cases, items))
    reranked = np.full_like(idx, -1)
    for c in range(len(test)):
        lo, hi = cand_ptr[c], cand_ptr[c + 1]
        order = np.argsort(-pred[lo:hi], kind="stable")
        reranked[c, : hi - lo] = idx[c, :groups[c]][order]
    repeat = np.asarray([t in set(p.tolist()) for p, t in zip(prefixes, target, strict=True)])
    print(f"{len(test)} cases, {100 * (~repeat).mean():.1f}% non-re-view")
    for name, ranked in (("first stage", idx), ("ranker", reranked)):
        for label, mask in (("all", np.ones(len(test), bool)), ("non-re-view", ~repeat)):
            h20, m20 = metrics(ranked[mask], target[mask], 20)
            h10, m10 = metrics(ranked[mask], target[mask], 10)
            print(f"| {name} | {label} | {h10:.2f} | {h20:.2f} | {m10:.2f} | {m20:.2f} |")


if __name__ == "__main__":
    main()
