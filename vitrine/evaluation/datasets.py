"""Evaluation data: the Tmall sessions (shared data) and held-out splits of any session list.

Sessions are lists of product id strings, oldest first. A test case is
(prefix, next): the session so far (oldest first) and the product clicked next.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
TMALL_TRAIN = "tmall/train_sessions.txt"
TMALL_TEST = "tmall/test_prefix_next.tsv"


def shared_data_dir() -> Path:
    """`$VITRINE_SHARED_DATA`, else `<repo>/../shared/data`."""
    env = os.environ.get("VITRINE_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Case:
    prefix: tuple[str, ...]  # oldest first
    next: str


@dataclass(frozen=True)
class Dataset:
    name: str
    train: list[list[str]]     # sessions, oldest first
    test: list[Case]
    products: tuple[Any, ...] = ()                            # vitrine.v1 Products to upsert first
    categories: dict[str, str] = field(default_factory=dict)  # product id -> category

    def limited(self, limit: int | None, *, seed: int = 0) -> Dataset:
        """At most `limit` test cases, a seeded uniform sample kept in file order."""
        if not limit or limit >= len(self.test):
            return self
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(self.test), size=limit, replace=False))
        return replace(self, test=[self.test[i] for i in keep])


def read_sessions(path: str | Path) -> list[list[str]]:
    """One session a line, product ids separated by whitespace, oldest first; blank lines skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            ids = line.split()
            if ids:
                out.append(ids)
    return out


def read_prefix_next(path: str | Path) -> list[Case]:
    """`prefix<TAB>next` a line (prefix space-separated, oldest first)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            try:
                prefix, nxt = line.split("\t")
            except ValueError:
                raise ValueError(f"{path}:{n}: expected prefix<TAB>next") from None
            out.append(Case(tuple(prefix.split()), nxt.strip()))
    return out


def load_tmall(data_dir: str | Path | None = None) -> Dataset:
    """The Tmall train sessions and test cases under `data_dir` (default `shared_data_dir()`)."""
    root = Path(data_dir) if data_dir else shared_data_dir()
    train, test = root / TMALL_TRAIN, root / TMALL_TEST
    if not train.exists() or not test.exists():
        raise FileNotFoundError(f"Tmall data not found under {root} (set VITRINE_SHARED_DATA)")
    return Dataset("tmall", read_sessions(train), read_prefix_next(test))


def prefix_cases(sessions: Iterable[Sequence[str]]) -> list[Case]:
    """Every (prefix, next) of each session: for s = a b c, cases (a)->b and (a b)->c."""
    out = []
    for s in sessions:
        for i in range(1, len(s)):
            out.append(Case(tuple(s[:i]), s[i]))
    return out


def split_sessions(sessions: Sequence[Sequence[str]], *, test_fraction: float = 0.2,
                   name: str = "sessions") -> Dataset:
    """Hold out the LAST `test_fraction` of sessions (in the given, time, order) as test.

    Test cases are all prefixes of the held-out sessions whose next product occurs in the
    training sessions (an unseen product cannot be recommended by anything learned), as in
    the Tmall protocol.
    """
    kept: list[list[str]] = [list(s) for s in sessions if len(s) > 0]
    n_test = round(len(kept) * test_fraction)
    train, held = kept[: len(kept) - n_test], kept[len(kept) - n_test:]
    known = {p for s in train for p in s}
    test = [c for c in prefix_cases(held) if c.next in known]
    return Dataset(name, train, test)


def index_items(dataset: Dataset) -> tuple[dict[str, int], list[np.ndarray], list[tuple[np.ndarray, int]]]:
    """Map product ids to dense indices 0..n-1 (training items first, in order of appearance).

    Returns (id -> index, train sessions as int64 arrays, test cases as (prefix newest FIRST
    as int64 array with -1 for ids unseen in training, target index or -1)).
    """
    ids: dict[str, int] = {}
    train = []
    for s in dataset.train:
        train.append(np.fromiter((ids.setdefault(p, len(ids)) for p in s), dtype=np.int64, count=len(s)))
    test = []
    for c in dataset.test:
        pref = np.fromiter((ids.get(p, -1) for p in reversed(c.prefix)), dtype=np.int64,
                           count=len(c.prefix))
        test.append((pref, ids.get(c.next, -1)))
    return ids, train, test


def load_demo(*, seed: int = 42, n_shoppers: int = 0, test_days: float = 7.0,
              with_catalog: bool = True) -> Dataset:
    """The demo store's sessions (`vitrine.demo`, seeded, fixed reference time), split by time:
    sessions that start in the last `test_days` days are the test set (all their prefixes whose
    next product occurs in training), earlier ones are training data. With `with_catalog`,
    the demo catalog's products (titles, categories, prices, stock) come along to be upserted."""
    from vitrine.demo.catalog import build_catalog
    from vitrine.demo.config import REFERENCE_NOW_MS, DemoConfig
    from vitrine.demo.sessions import time_split

    overrides: dict[str, Any] = {"n_shoppers": n_shoppers} if n_shoppers else {}
    config = DemoConfig(seed=seed, now_ms=REFERENCE_NOW_MS, **overrides)
    train, test, _ = time_split(config, test_days=test_days, min_length=2)
    train_sessions = [list(s.product_ids) for s in sorted(train, key=lambda s: s.start_ms)]
    known = {p for s in train_sessions for p in s}
    held = [s.product_ids for s in sorted(test, key=lambda s: s.start_ms)]
    cases = [c for c in prefix_cases(held) if c.next in known]
    if not with_catalog:
        return Dataset("demo", train_sessions, cases)
    cfg = config.resolved()
    catalog = build_catalog(cfg.n_products, cfg.seed, cfg.currency, cfg.n_categories, cfg.styles_per_category,
                            cfg.out_of_stock_share)
    products = tuple(catalog.product(i) for i in range(len(catalog)))
    return Dataset("demo", train_sessions, cases, products, {p.product_id: p.category for p in products})


def category_affinity(prefix: Sequence[str], categories: dict[str, str], *, decay: float = 0.9) -> dict[str, float]:
    """What a profile's time-decayed `category_affinity` would hold after these views: each view
    (oldest first) adds decay**age to its product's category, age 0 = newest."""
    out: dict[str, float] = {}
    n = len(prefix)
    for i, product_id in enumerate(prefix):
        c = categories.get(product_id)
        if c:
            out[c] = out.get(c, 0.0) + decay ** (n - 1 - i)
    return out
