"""FAISS inner-product index over unit item vectors, chosen by catalog size.

- Up to `flat_max_items` vectors: `IndexFlatIP`, exact.
- Above: `IndexIVFFlat` (inner product, nlist ~ 4 sqrt(n) lists) by default, or
  `IndexHNSWFlat` when `IndexParams.kind` is HNSW. At 1M x 64 IVF reaches recall@10 0.97 in
  a third or less of HNSW's search time (M=32 or 16) and builds 2-12x faster (measured:
  benchmarks/recommendation.md). The search knob (IVF nprobe, HNSW efSearch) is not guessed:
  `build_index` measures recall@10 against exact search on a sample of queries and raises the
  knob until the measured recall reaches `target_recall` (default 0.97, a margin over the 0.95
  goal). The chosen value and the measured recall are kept on the index and saved beside it;
  directories saved before IVF existed (flat / HNSW with `ef_search`) load unchanged.

Searching is thread-safe (the index is never modified after `build_index`), so a new
index can be built in a worker thread while requests search the old one. OpenMP threads do
not matter to a request: FAISS parallelises IVF and HNSW searches over queries, so one query
runs on the calling thread whatever OMP_NUM_THREADS says (IVF at 1M, nq = 1: p50 0.298 ms with
1 thread, 0.306 ms with 2, same run), and builds keep every core.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

FLAT = "flat"
HNSW = "hnsw"
IVF = "ivf"
KINDS = (IVF, HNSW)  # the kinds above flat_max_items

DEFAULT_FLAT_MAX_ITEMS = 20_000
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 64            # starting point of the efSearch tuning
MAX_EF_SEARCH = 1024
DEFAULT_NPROBE = 8                # starting point of the nprobe tuning
IVF_LISTS_PER_SQRT_N = 4          # nlist = 4 sqrt(n)
IVF_TRAIN_POINTS_PER_LIST = 50    # k-means sample (FAISS wants >= 39 per list)
DEFAULT_TARGET_RECALL = 0.97      # recall@10 vs exact that tuning aims for (goal: >= 0.95)
RECALL_K = 10
TUNING_QUERIES = 500              # sample size for measuring recall at build time
INDEX_FILE = "index.faiss"
INDEX_META_FILE = "index.json"

Progress = Callable[[str, float], None]


@dataclasses.dataclass(frozen=True)
class IndexParams:
    flat_max_items: int = DEFAULT_FLAT_MAX_ITEMS
    kind: str = IVF               # above flat_max_items: IVF or HNSW
    nlist: int = 0                # IVF lists (0 = 4 sqrt(n))
    nprobe: int = DEFAULT_NPROBE  # IVF: where nprobe tuning starts
    hnsw_m: int = DEFAULT_HNSW_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ef_search: int = DEFAULT_EF_SEARCH
    target_recall: float = DEFAULT_TARGET_RECALL
    tune: bool = True             # measure recall and raise efSearch / nprobe to reach target_recall

    def __post_init__(self) -> None:  # a bad kind fails when the service is built, not at Train
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


class VectorIndex:
    """An immutable inner-product index plus what was measured when it was built.

    `ef_search` (HNSW) or `nprobe` (IVF) is the tuned search knob; 0 for the other kinds."""

    def __init__(self, index: faiss.Index, kind: str, *, ef_search: int = 0, nprobe: int = 0,
                 recall: float = 1.0, build_seconds: float = 0.0) -> None:
        self.index = index
        self.kind = kind
        self.ef_search = ef_search
        self.nprobe = nprobe
        self.recall = recall
        self.build_seconds = build_seconds
        if kind == HNSW:
            hnsw: Any = faiss.downcast_index(index)  # Any: faiss's SWIG classes are untyped per index kind
            hnsw.hnsw.efSearch = ef_search
        elif kind == IVF:
            faiss.extract_index_ivf(index).nprobe = nprobe

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 (nq, k), rows int64 (nq, k)); rows are -1 where fewer than k exist."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} != index dimension {self.dim}")
        k = max(1, min(int(k), self.size))
        if self.size == 0:
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        if self.kind == HNSW and k > self.ef_search:
            # In every faiss build with HNSW, but not in the SWIG module mypy reads.
            params = faiss.SearchParametersHNSW(efSearch=k)  # type: ignore[attr-defined]
            return self.index.search(q, k, params=params)
        return self.index.search(q, k)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        meta = {"kind": self.kind, "ef_search": self.ef_search, "nprobe": self.nprobe, "recall_at_10": self.recall,
                "build_seconds": self.build_seconds, "items": self.size, "dim": self.dim}
        if self.kind == IVF:
            meta["nlist"] = int(faiss.extract_index_ivf(self.index).nlist)
        (directory / INDEX_META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path, *, mmap: bool = False) -> VectorIndex:
        meta = json.loads((directory / INDEX_META_FILE).read_text())
        flags = faiss.IO_FLAG_MMAP if mmap else 0
        index = faiss.read_index(str(directory / INDEX_FILE), flags)
        return cls(index, meta["kind"], ef_search=int(meta.get("ef_search", 0)), nprobe=int(meta.get("nprobe", 0)),
                   recall=float(meta["recall_at_10"]), build_seconds=float(meta.get("build_seconds", 0.0)))


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top k (the ground truth for recall)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of `truth` present in the same row of `found`."""
    if truth.size == 0:
        return 1.0
    hits = sum(len(np.intersect1d(f[f >= 0], t[t >= 0])) for f, t in zip(found, truth, strict=True))
    return hits / float((truth >= 0).sum())


def tuning_queries(vectors: np.ndarray, n: int = TUNING_QUERIES, *, seed: int = 0) -> np.ndarray:
    """Queries like the service's: an item vector (SIMILAR), or a recency-weighted blend of two
    to six (a shopper vector, decay 0.7), with a little noise; unit rows."""
    rng = np.random.default_rng(seed)
    parts = rng.integers(1, 7, n)
    q = np.zeros((n, vectors.shape[1]), np.float64)
    for j, weight in enumerate(0.7 ** np.arange(6)):
        use = parts > j
        q[use] += weight * vectors[rng.integers(0, len(vectors), int(use.sum()))]
    q += 0.02 * rng.standard_normal(q.shape)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return q.astype(np.float32)


def ivf_lists(n: int) -> int:
    """nlist for n vectors: 4 sqrt(n), at least 1, at most n / IVF_TRAIN_POINTS_PER_LIST."""
    return max(1, min(round(IVF_LISTS_PER_SQRT_N * math.sqrt(n)), n // IVF_TRAIN_POINTS_PER_LIST))


def build_index(vectors: np.ndarray, params: IndexParams | None = None, *,
                progress: Progress | None = None) -> VectorIndex:
    """Build the index for `vectors` (float32 (n, d), unit rows); flat up to
    `params.flat_max_items`, else `params.kind` (IVF or HNSW) with its search knob tuned."""
    params = params or IndexParams()
    report = progress or (lambda stage, fraction: None)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError("vectors must be 2-D (n, dim)")
    n, d = x.shape
    started = time.perf_counter()
    if n <= params.flat_max_items:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        report("index", 1.0)
        return VectorIndex(index, FLAT, build_seconds=time.perf_counter() - started)
    built = _build_ivf(x, params, report) if params.kind == IVF else _build_hnsw(x, params, report)
    if params.tune:
        built = tune_search(built, x, target=params.target_recall)
    report("index", 1.0)
    built.build_seconds = time.perf_counter() - started
    return built


def _build_ivf(x: np.ndarray, params: IndexParams, report: Progress) -> VectorIndex:
    n, d = x.shape
    nlist = params.nlist or ivf_lists(n)
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = min(n, IVF_TRAIN_POINTS_PER_LIST * nlist)
    rows = np.random.default_rng(0).choice(n, sample, replace=False) if sample < n else slice(None)
    ivf.train(x[rows])
    report("index", 0.4)
    step = max(50_000, n // 10)
    for lo in range(0, n, step):
        ivf.add(x[lo:lo + step])
        report("index", 0.4 + 0.5 * min(n, lo + step) / n)
    return VectorIndex(ivf, IVF, nprobe=min(params.nprobe, nlist), recall=float("nan"))


def _build_hnsw(x: np.ndarray, params: IndexParams, report: Progress) -> VectorIndex:
    n, d = x.shape
    hnsw = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = params.ef_construction
    step = max(50_000, n // 20)
    for lo in range(0, n, step):
        hnsw.add(x[lo:lo + step])
        report("index", 0.9 * min(n, lo + step) / n)
    return VectorIndex(hnsw, HNSW, ef_search=params.ef_search, recall=float("nan"))


def tune_search(index: VectorIndex, vectors: np.ndarray, *, target: float = DEFAULT_TARGET_RECALL,
                n_queries: int = TUNING_QUERIES) -> VectorIndex:
    """Raise the search knob (HNSW efSearch, IVF nprobe), doubling from its current value, until
    recall@10 >= target, then bisect back to the smallest value that meets it; returns the index."""
    queries = tuning_queries(vectors, n_queries)
    _, truth = exact_search(vectors, queries, RECALL_K)
    if index.kind == IVF:
        ivf = faiss.extract_index_ivf(index.index)
        top, start = int(ivf.nlist), max(index.nprobe, 1)

        def set_knob(value: int) -> None:
            ivf.nprobe = value
    else:
        inner: Any = faiss.downcast_index(index.index)  # an IndexHNSW; untyped SWIG attributes
        top, start = MAX_EF_SEARCH, max(index.ef_search, RECALL_K)

        def set_knob(value: int) -> None:
            inner.hnsw.efSearch = value

    def measure(value: int) -> float:
        set_knob(value)
        _, found = index.index.search(queries, RECALL_K)
        return recall_at_k(found, truth)

    low, knob = 0, min(start, top)
    recall = measure(knob)
    while recall < target and knob < top:  # double until the target is met
        low, knob = knob, min(top, knob * 2)
        recall = measure(knob)
    for _ in range(4):  # then bisect back towards the smallest value that meets it
        mid = (low + knob) // 2
        if low == 0 or mid <= low or mid >= knob:
            break
        r = measure(mid)
        if r >= target:
            knob, recall = mid, r
        else:
            low = mid
    set_knob(knob)
    if index.kind == IVF:
        index.nprobe = knob
    else:
        index.ef_search = knob
    index.recall = recall
    return index
