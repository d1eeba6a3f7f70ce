"""Candidates as NumPy columns (catalog rows, scores, where each came from) and the per-request
state the retrievers, the kernel call and the explanations share."""

from __future__ import annotations

import numpy as np

from services.recommendation.catalog import Catalog
from services.recommendation.model import Model
from services.recommendation.query import Query

# Where a candidate came from (turned into the reason text).
SRC_FOR_YOU, SRC_SIMILAR, SRC_TOGETHER, SRC_UPSELL, SRC_RECENT, SRC_TRENDING, SRC_CART, SRC_LIST = range(8)
PRIMARY_SOURCE = {"FOR_YOU": SRC_FOR_YOU, "SIMILAR": SRC_SIMILAR, "BOUGHT_TOGETHER": SRC_TOGETHER,
                  "UP_SELL": SRC_UPSELL, "RECENTLY_VIEWED": SRC_RECENT, "TRENDING": SRC_TRENDING,
                  "CART_COMPLEMENTS": SRC_TOGETHER}
SOURCE_STRATEGY = {SRC_FOR_YOU: "FOR_YOU", SRC_SIMILAR: "SIMILAR", SRC_TOGETHER: "BOUGHT_TOGETHER",
                   SRC_UPSELL: "UP_SELL", SRC_RECENT: "RECENTLY_VIEWED", SRC_TRENDING: "TRENDING",
                   SRC_CART: "SIMILAR"}
NO_ROWS = np.zeros(0, np.int64)


class Candidates:
    """rows: int64 catalog rows (-1 = none); scores: float32; sources: int8 SRC_*; complete: True
    when asking the retriever for more would give nothing new."""

    __slots__ = ("complete", "rows", "scores", "sources")

    def __init__(self, rows: np.ndarray, scores: np.ndarray, sources: np.ndarray, complete: bool) -> None:
        self.rows = rows
        self.scores = scores
        self.sources = sources
        self.complete = complete

    @staticmethod
    def empty() -> Candidates:
        return Candidates(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int8), True)

    def __len__(self) -> int:
        return int(self.rows.size)

    def then(self, other: Candidates) -> Candidates:
        """`other` appended below every candidate of self (scores shifted under self's minimum)."""
        if not len(other):
            return self
        if not len(self):
            return other
        floor = float(self.scores.min()) - 1.0
        top = float(other.scores.max())
        shifted = (other.scores - top + floor).astype(np.float32)
        return Candidates(np.concatenate([self.rows, other.rows]), np.concatenate([self.scores, shifted]),
                          np.concatenate([self.sources, other.sources]), self.complete and other.complete)


class RequestState:
    """Per-request state shared by the retriever, the kernel call and the explanations. A strategy
    may narrow the price window and the categories (UP_SELL); `reset_rules` undoes that."""

    def __init__(self, q: Query, model: Model | None, anchor_row: int, cart_rows: np.ndarray,
                 excluded: np.ndarray, catalog: Catalog) -> None:
        self.q = q
        self.model = model
        self.anchor_row = anchor_row
        self.cart_rows = cart_rows
        self.excluded = excluded
        self.min_price = 0.0
        self.max_price = 0.0
        self.include_categories: np.ndarray | None = None
        self.reset_rules(catalog)

    def reset_rules(self, catalog: Catalog) -> None:
        """Back to the request's own price and category rules (undoing a strategy's narrowing)."""
        self.min_price = self.q.rules.min_price
        self.max_price = self.q.rules.max_price
        self.include_categories = (catalog.category_ids(self.q.rules.include_categories)
                                   if self.q.rules.include_categories else None)

    def anchor_name(self, catalog: Catalog) -> str:
        if self.anchor_row < 0:
            return "your cart"
        return catalog.titles[self.anchor_row] or catalog.ids[self.anchor_row]
