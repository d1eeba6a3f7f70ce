"""The reason text of each recommended item, from where it came from and the kernel's reason code."""

from __future__ import annotations

from scoring import rerank as rr
from services.recommendation.candidates import (
    SRC_CART,
    SRC_FOR_YOU,
    SRC_LIST,
    SRC_RECENT,
    SRC_SIMILAR,
    SRC_TOGETHER,
    SRC_TRENDING,
    SRC_UPSELL,
)

# Rank: a caller's list item that no signal of the shopper moved keeps the caller's relevance.
LIST_REASON = "matches this page"


def reason(source: int, code: int, category: str, *, strategy: str, anchor: str, category_filter: bool) -> str:
    """`anchor` is the anchor's title (or "your cart"); `category_filter` is True when the request
    named categories (trending then reads "popular in <category>")."""
    if code == rr.REASON_CATEGORY:
        return f"because you like {category}"
    if code == rr.REASON_BUDGET and source in (SRC_FOR_YOU, SRC_UPSELL, SRC_TRENDING):
        return "within your budget"
    if source == SRC_FOR_YOU:
        return "based on your recent activity"
    if source == SRC_SIMILAR:
        return f"similar to {anchor}"
    if source == SRC_TOGETHER:
        return "goes with your cart" if strategy == "CART_COMPLEMENTS" else f"often bought with {anchor}"
    if source == SRC_CART:
        return "goes with your cart"
    if source == SRC_UPSELL:
        return f"a step up from {anchor}"
    if source == SRC_RECENT:
        return "you viewed this recently"
    if source == SRC_LIST:
        return LIST_REASON
    if category_filter and category:
        return f"popular in {category}"
    return "trending now"
