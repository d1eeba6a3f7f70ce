"""What a caller asks for (`Query` for Recommend, `RankQuery` for Rank) and its validation.

Validation raises `InvalidArgument` for a request that cannot be answered as asked, before anything
is computed; unknown product ids inside the shopper's signals and the exclusions are not errors
(profiles outlive products), an unknown anchor is NOT_FOUND in the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.recommendation.catalog import product_id_error
from services.recommendation.config import (
    MAX_AFFINITY_ENTRIES,
    MAX_CART_IDS,
    MAX_CATEGORY_FILTERS,
    MAX_EXCLUDE_IDS,
    MAX_K,
    MAX_PRODUCT_ID_LENGTH,
    MAX_PURCHASED_IDS,
    MAX_RANK_IDS,
    MAX_RECENT_IDS,
)

STRATEGIES = ("FOR_YOU", "SIMILAR", "BOUGHT_TOGETHER", "UP_SELL", "RECENTLY_VIEWED", "TRENDING",
              "CART_COMPLEMENTS")
ANCHORED = ("SIMILAR", "BOUGHT_TOGETHER", "UP_SELL")


@dataclass(frozen=True)
class Shopper:
    user_id: str = ""
    recent: tuple[str, ...] = ()          # newest first
    purchased: tuple[str, ...] = ()
    affinity: dict[str, float] = field(default_factory=dict)
    budget: float = 0.0
    recent_counts: tuple[int, ...] = ()   # views of each recent product, parallel to `recent` (missing = 1)


@dataclass(frozen=True)
class Rules:
    include_out_of_stock: bool = False
    max_price: float = 0.0
    min_price: float = 0.0
    exclude_ids: tuple[str, ...] = ()
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    max_per_category: int = 0
    exclude_purchased: bool = False


@dataclass(frozen=True)
class Query:
    strategy: str
    k: int
    anchor: str = ""
    cart: tuple[str, ...] = ()
    shopper: Shopper = field(default_factory=Shopper)
    rules: Rules = field(default_factory=Rules)


@dataclass(frozen=True)
class RankQuery:
    """Rank: the caller's own list (search results, a category page) to order for one shopper."""

    product_ids: tuple[str, ...]
    k: int = 0                             # 0 = every product that qualifies
    shopper: Shopper = field(default_factory=Shopper)
    rules: Rules = field(default_factory=Rules)


def _finite_nonnegative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{name} must be a finite number >= 0, got {value}")


def _limit(name: str, values: tuple[str, ...] | tuple[int, ...] | dict[str, float], limit: int) -> None:
    if len(values) > limit:
        raise InvalidArgument(f"{name} has {len(values)} entries; at most {limit} are allowed")


def validate_rules_and_shopper(r: Rules, s: Shopper) -> None:
    """The checks Recommend and Rank share: prices, contradictory rules, list sizes, affinities."""
    _finite_nonnegative("constraints.max_price", r.max_price)
    _finite_nonnegative("constraints.min_price", r.min_price)
    _finite_nonnegative("user.budget", s.budget)
    if r.max_price > 0 and r.min_price > r.max_price:
        raise InvalidArgument(f"constraints.min_price ({r.min_price}) is above constraints.max_price "
                              f"({r.max_price}); nothing could match")
    if r.max_per_category < 0:
        raise InvalidArgument("constraints.max_per_category must be >= 0 (0 = no bound)")
    both = set(r.include_categories) & set(r.exclude_categories)
    if both:
        raise InvalidArgument(f"categories both included and excluded: {', '.join(sorted(both))}")
    _limit("constraints.exclude_product_ids", r.exclude_ids, MAX_EXCLUDE_IDS)
    _limit("constraints.include_categories", r.include_categories, MAX_CATEGORY_FILTERS)
    _limit("constraints.exclude_categories", r.exclude_categories, MAX_CATEGORY_FILTERS)
    _limit("user.recent_product_ids", s.recent, MAX_RECENT_IDS)
    _limit("user.recent_view_counts", s.recent_counts, MAX_RECENT_IDS)
    _limit("user.purchased_product_ids", s.purchased, MAX_PURCHASED_IDS)
    _limit("user.category_affinity", s.affinity, MAX_AFFINITY_ENTRIES)
    if any(not math.isfinite(v) for v in s.affinity.values()):
        raise InvalidArgument("user.category_affinity values must be finite numbers")
    if len(s.recent_counts) > len(s.recent):  # fewer is fine: the missing ones count as one view
        raise InvalidArgument(f"user.recent_view_counts has {len(s.recent_counts)} entries for "
                              f"{len(s.recent)} recent_product_ids; give one count per id or none")
    if any(c < 0 for c in s.recent_counts):
        raise InvalidArgument("user.recent_view_counts must be >= 0")


def validate(q: Query) -> None:
    """Raise InvalidArgument for a Recommend query that cannot be answered as asked."""
    if q.strategy not in STRATEGIES:
        raise InvalidArgument(f"strategy must be one of {', '.join(STRATEGIES)}")
    if not 1 <= q.k <= MAX_K:
        raise InvalidArgument(f"k must be between 1 and {MAX_K}, got {q.k}")
    validate_rules_and_shopper(q.rules, q.shopper)
    _limit("cart_product_ids", q.cart, MAX_CART_IDS)
    if len(q.anchor) > MAX_PRODUCT_ID_LENGTH:
        raise InvalidArgument(f"product_id is longer than {MAX_PRODUCT_ID_LENGTH} characters")
    if q.strategy in ANCHORED and not q.anchor:
        raise InvalidArgument(f"{q.strategy} needs product_id (the anchor product)")
    if q.strategy == "CART_COMPLEMENTS" and not q.cart and not q.anchor:
        raise InvalidArgument("CART_COMPLEMENTS needs cart_product_ids")


def validate_rank(q: RankQuery) -> None:
    """Raise InvalidArgument for a Rank query that cannot be answered as asked. Ids that are well
    formed but not in the catalog are no error: Rank drops and counts them."""
    _limit("product_ids", q.product_ids, MAX_RANK_IDS)
    if not 0 <= q.k <= MAX_RANK_IDS:
        raise InvalidArgument(f"k must be between 0 (every product that qualifies) and {MAX_RANK_IDS}, got {q.k}")
    validate_rules_and_shopper(q.rules, q.shopper)
    for i, product_id in enumerate(q.product_ids):
        problem = product_id_error(product_id)
        if problem:
            raise InvalidArgument(f"product_ids[{i}]: {problem}")
