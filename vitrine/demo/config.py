"""Configuration of the synthetic demo store: sizes, seed, time window and behaviour knobs.

`DemoConfig()` is the interactive demo (10,000 products, 5,000 shoppers, 90 days).
`DemoConfig.preset("load")` is the load-benchmark scale (100,000 products, 1,000,000
shoppers with short histories). Everything generated from a config is a pure function
of it: the same config (with a fixed `now_ms`) gives the same products and events.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from scoring.units import DAY_MS

#: Fixed reference time for deterministic tests: 2026-11-01T00:00:00Z.
REFERENCE_NOW_MS = 1_793_491_200_000


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    n_products: int = 10_000
    n_shoppers: int = 5_000
    #: how many catalog categories to use (0 = all of them; at least 20 are defined).
    n_categories: int = 0
    seed: int = 42
    #: length of the generated history, ending at `now_ms` (90: long enough for the built-in
    #: `at_risk` segment, which needs 60 days without a purchase).
    days: int = 90
    #: end of the history (Unix ms). None = the time `resolved()` is called, so that
    #: recency segments are meaningful when the demo is loaded "now".
    now_ms: int | None = None
    #: the catalog's currency ("EUR" or "BRL").
    currency: str = "EUR"
    #: mean number of visits (sessions) per shopper; at least one each.
    sessions_mean: float = 3.0
    #: mean number of product views per visit; at least one each.
    views_mean: float = 4.0
    #: shoppers logged in from their first event (customer ids "c...").
    registered_share: float = 0.30
    #: shoppers anonymous first ("v...") who log in mid-history (the loader calls Identify).
    login_share: float = 0.06
    #: shoppers with a real intent to buy (others mostly browse).
    buyer_share: float = 0.35
    #: share of products with zero stock.
    out_of_stock_share: float = 0.08
    #: latent style sub-clusters per category (co-viewing follows them).
    styles_per_category: int = 8
    #: shoppers generated per vectorized chunk.
    chunk_size: int = 4_096
    scale: str = "demo"

    def __post_init__(self) -> None:
        if self.n_products < 1 or self.n_shoppers < 0:
            raise ValueError("n_products must be >= 1 and n_shoppers >= 0")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if self.currency not in ("EUR", "BRL"):
            raise ValueError(f"currency must be EUR or BRL, got {self.currency!r}")
        if self.sessions_mean < 1 or self.views_mean < 1:
            raise ValueError("sessions_mean and views_mean must be >= 1")
        if not 1 <= self.styles_per_category <= 64:
            raise ValueError("styles_per_category must be in 1..64")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DemoConfig:
        """`demo` (the default sizes) or `load` (100k products, 1M shoppers, short histories)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(scale=name, **values)

    def resolved(self) -> DemoConfig:
        """A copy with `now_ms` fixed (to the current time when it was None)."""
        if self.now_ms is not None:
            return self
        return dataclasses.replace(self, now_ms=int(time.time() * 1000))

    @property
    def end_ms(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.days * DAY_MS


PRESETS: dict[str, dict[str, Any]] = {
    "demo": {},
    "load": {
        "n_products": 100_000,
        "n_shoppers": 1_000_000,
        "days": 30,
        "sessions_mean": 1.5,
        "views_mean": 3.0,
        "chunk_size": 16_384,
    },
}
