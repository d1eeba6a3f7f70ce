"""Scoring-level offline evaluation on Tmall: NumPy/Numba/FAISS directly, no service.

Every run appends one line per configuration to benchmarks/evaluation/scoring_level.tsv,
so the table of everything tried is kept. Examples:

    .venv/bin/python benchmarks/evaluation/scoring_level.py pop recent iknn
    .venv/bin/python benchmarks/evaluation/scoring_level.py svd --dim 64 --window 5 --alpha 0.5
    .venv/bin/python benchmarks/evaluation/scoring_level.py sknn --window 8 --backward 0.5
    .venv/bin/python benchmarks/evaluation/scoring_level.py blend --limit 5000

Data: $VITRINE_SHARED_DATA/tmall (default <repo>/../shared/data/tmall).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from scoring import session_knn
from scoring.item_vectors import train_item_vectors
from scoring.shopper import shopper_vector
from vitrine.evaluation.datasets import index_items, load_tmall
from vitrine.evaluation.metrics import score_lists

LOG = Path(__file__).resolve().parent / "scoring_level.tsv"
K = 20


def fill_with(ranked: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Pad -1 slots of each row with fallback items not already in the row."""
    out = ranked.copy()
    for r in range(out.shape[0]):
        row = out[r]
        free = np.flatnonzero(row < 0)
        if not free.size:
            continue
        have = set(row[row >= 0].tolist())
        fill = [x for x in fallback[: K + len(have)] if x not in have][: free.size]
        row[free[: len(fill)]] = fill
    return out


def topk_dense(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    s = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("methods", nargs="+")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--window", type=int, default=session_knn.DEFAULT_WINDOW)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--cds", type=float, default=0.75)
    ap.add_argument("--decay", type=float, default=session_knn.DEFAULT_RECENCY_DECAY)
    ap.add_argument("--n-recent", type=int, default=session_knn.DEFAULT_N_RECENT)
    ap.add_argument("--repeat", type=float, default=session_knn.DEFAULT_REPEAT_WEIGHT)
    ap.add_argument("--repeat-decay", type=float, default=session_knn.DEFAULT_REPEAT_DECAY)
    ap.add_argument("--backward", type=float, default=session_knn.DEFAULT_BACKWARD)
    ap.add_argument("--dpow", type=float, default=session_knn.DEFAULT_DISTANCE_POWER)
    ap.add_argument("--norm-alpha", type=float, default=session_knn.DEFAULT_NORM_ALPHA)
    ap.add_argument("--top-m", type=int, default=session_knn.DEFAULT_TOP_M)
    ap.add_argument("--vec-weight", type=float, default=0.0, help="blend: weight of the vector score")
    ap.add_argument("--vec-n", type=int, default=200, help="blend: FAISS candidates from the vector")
    ap.add_argument("--svd-window", type=int, default=5)
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    t0 = time.time()
    ds = load_tmall().limited(args.limit or None)
    ids, train, test = index_items(ds)
    n = len(ids)
    targets = np.array([t for _, t in test])
    prefixes = [p for p, _ in test]
    novel = np.array([t not in set(p.tolist()) for p, t in test])  # target not viewed before
    pop = np.argsort(-np.bincount(np.concatenate(train), minlength=n), kind="stable")
    print(f"loaded {len(train)} sessions, {len(test)} cases, {n} items in {time.time() - t0:.1f}s")

    def report(name: str, params: dict, ranked: np.ndarray, secs: float) -> None:
        s = score_lists(ranked, targets, n)
        sn = score_lists(ranked[novel], targets[novel], n)
        row = {"method": name, "params": json.dumps(params, sort_keys=True), "cases": s.cases,
               **{k: round(100 * v, 2) for k, v in s.as_row().items()},
               "HR@20 new": round(100 * sn.hr20, 2), "MRR@20 new": round(100 * sn.mrr20, 2),
               "seconds": round(secs, 1),
               "note": args.note}
        print("\t".join(str(v) for v in row.values()), flush=True)
        new = not LOG.exists()
        with LOG.open("a") as f:
            if new:
                f.write("\t".join(row) + "\n")
            f.write("\t".join(str(v) for v in row.values()) + "\n")

    for method in args.methods:
        t = time.time()
        if method == "pop":
            ranked = np.tile(pop[:K], (len(test), 1))
            report("popularity", {}, ranked, time.time() - t)
        elif method == "recent":
            # recently viewed, newest first, de-duplicated, then popularity
            ranked = np.full((len(test), K), -1, dtype=np.int64)
            for r, p in enumerate(prefixes):
                _, first = np.unique(p, return_index=True)
                u = p[np.sort(first)]
                u = u[u >= 0][:K]
                ranked[r, : u.size] = u
            report("recently_viewed+pop", {}, fill_with(ranked, pop), time.time() - t)
        elif method in ("iknn", "iknn10"):
            # cosine of session co-occurrence (binary per session), with the last item /
            # the last 10 items weighted 1/position; prefix items excluded (classic item-kNN).
            rows = np.concatenate([np.full(np.unique(s).size, i) for i, s in enumerate(train)])
            cols = np.concatenate([np.unique(s) for s in train])
            x = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(len(train), n))
            c = (x.T @ x).tocsr()
            c.setdiag(0)
            c.eliminate_zeros()
            f = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
            f[f == 0] = 1
            cos = sp.diags(1 / f) @ c @ sp.diags(1 / f)
            nb = session_knn._top_m_csr(cos.tocsr(), 100000)
            nr = 1 if method == "iknn" else 10
            idx, _ = session_knn.session_topk(nb, prefixes, K, n_recent=nr, recency_decay=0.0,
                                              repeat_weight=0.0)
            report(f"item-kNN last {nr}", {"n_recent": nr, "weights": "1/pos"},
                   fill_with(idx, pop), time.time() - t)
        elif method == "svd":
            v = train_item_vectors(train, n, dim=args.dim, window=args.svd_window, alpha=args.alpha,
                                   cds=args.cds)
            tt = time.time() - t
            q = np.stack([shopper_vector(v, p, recency_decay=args.decay) for p in prefixes])
            ranked = np.concatenate([topk_dense(q[i:i + 2000] @ v.T, K) for i in range(0, len(q), 2000)])
            report("ppmi-svd shopper vector",
                   {"dim": args.dim, "window": args.svd_window, "alpha": args.alpha, "cds": args.cds,
                    "decay": args.decay, "train_s": round(tt, 1)}, ranked, time.time() - t)
        elif method == "svdsim":
            # SIMILAR as the service does it: nearest vectors of the newest prefix item, anchor excluded
            v = train_item_vectors(train, n, dim=args.dim, window=args.svd_window, alpha=args.alpha,
                                   cds=args.cds)
            tt = time.time() - t
            last = np.array([p[0] for p in prefixes])
            parts = []
            for i in range(0, len(last), 2000):
                sc = v[last[i:i + 2000]] @ v.T
                sc[np.arange(sc.shape[0]), last[i:i + 2000]] = -np.inf
                parts.append(topk_dense(sc, K))
            report("ppmi-svd SIMILAR (last item, anchor excluded)",
                   {"dim": args.dim, "window": args.svd_window, "alpha": args.alpha, "cds": args.cds,
                    "train_s": round(tt, 1)}, np.concatenate(parts), time.time() - t)
        elif method in ("sknn", "blend"):
            nb = session_knn.build_neighbours(train, n, top_m=args.top_m, window=args.window,
                                              backward=args.backward, distance_power=args.dpow,
                                              norm_alpha=args.norm_alpha)
            tt = time.time() - t
            params = {"window": args.window, "backward": args.backward, "dpow": args.dpow,
                      "norm_alpha": args.norm_alpha, "top_m": args.top_m, "n_recent": args.n_recent,
                      "decay": args.decay, "repeat": args.repeat, "repeat_decay": args.repeat_decay,
                      "build_s": round(tt, 1)}
            if method == "sknn":
                idx, _ = session_knn.session_topk(nb, prefixes, K, n_recent=args.n_recent,
                                                  recency_decay=args.decay, repeat_weight=args.repeat,
                                                  repeat_decay=args.repeat_decay)
                report("neighbour score", params, fill_with(idx, pop), time.time() - t)
            else:
                v = train_item_vectors(train, n, dim=args.dim, window=args.svd_window, alpha=args.alpha)
                big, bsc = session_knn.session_topk(nb, prefixes, 200, n_recent=args.n_recent,
                                                    recency_decay=args.decay, repeat_weight=args.repeat,
                                                  repeat_decay=args.repeat_decay)
                ranked = np.full((len(test), K), -1, dtype=np.int64)
                for r, p in enumerate(prefixes):
                    q = shopper_vector(v, p, recency_decay=0.7)
                    vs = v @ q
                    cand = big[r][big[r] >= 0]
                    sc = bsc[r][: cand.size].astype(np.float64)
                    top = sc.max() if sc.size else 1.0
                    extra = np.argpartition(-vs, args.vec_n)[: args.vec_n]
                    allc = np.union1d(cand, extra)
                    ks = np.zeros(allc.size)
                    ks[np.searchsorted(allc, cand)] = sc / top
                    tot = ks + args.vec_weight * vs[allc]
                    ranked[r, : min(K, allc.size)] = allc[np.argsort(-tot, kind="stable")[:K]]
                params.update({"vec_weight": args.vec_weight, "vec_n": args.vec_n, "dim": args.dim})
                report("neighbour + vector blend", params, fill_with(ranked, pop), time.time() - t)
        else:
            raise SystemExit(f"unknown method {method}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
