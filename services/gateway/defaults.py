"""Placements a page gets when the request names none, and request validation."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.gateway import config as limits
from vitrine.v1 import gateway_pb2, recommend_pb2

S = recommend_pb2.Strategy

# page_type -> (slot_id, strategy) in answer order.
DEFAULT_PLACEMENTS: dict[str, tuple[tuple[str, recommend_pb2.Strategy.ValueType], ...]] = {
    "home": (("for_you", S.FOR_YOU), ("trending", S.TRENDING)),
    "product": (("similar", S.SIMILAR), ("bought_together", S.BOUGHT_TOGETHER), ("up_sell", S.UP_SELL)),
    "cart": (("cart_complements", S.CART_COMPLEMENTS),),
    "checkout": (("cart_complements", S.CART_COMPLEMENTS),),
    "category": (("for_you", S.FOR_YOU),),
    "search": (("for_you", S.FOR_YOU),),
}
# Category and search pages scope their default placements to the request's category.
CATEGORY_SCOPED_PAGES = frozenset({"category", "search"})
# Strategies that need an anchor product (PersonalizeRequest.product_id).
ANCHORED = frozenset({S.SIMILAR, S.BOUGHT_TOGETHER, S.UP_SELL})
# Strategies that are personal by nature: without a usable profile they become TRENDING.
PERSONAL = frozenset({S.FOR_YOU, S.RECENTLY_VIEWED})


@dataclass(slots=True)
class Slot:
    slot_id: str
    strategy: recommend_pb2.Strategy.ValueType
    k: int
    constraints: recommend_pb2.Constraints = field(default_factory=recommend_pb2.Constraints)
    # The caller's own list (search results, a category page): answered by Rank in this order's stead.
    candidates: list[str] = field(default_factory=list)


def _check_id(value: str, what: str) -> None:
    if len(value) > limits.MAX_ID_LENGTH:
        raise InvalidArgument(f"{what} is {len(value)} characters long; at most {limits.MAX_ID_LENGTH} are allowed")


def slots_for(request: gateway_pb2.PersonalizeRequest) -> list[Slot]:
    """The placements to fill, validated; raises InvalidArgument for a malformed request."""
    page = request.page_type or ("" if request.placements else "home")
    if page and page not in DEFAULT_PLACEMENTS:
        raise InvalidArgument(f"page_type {page!r} is not one of {', '.join(limits.PAGE_TYPES)}")
    _check_id(request.user_id, "user_id")
    _check_id(request.session_id, "session_id")
    _check_id(request.product_id, "product_id")
    _check_id(request.category, "category")
    if len(request.cart_product_ids) > limits.MAX_CART_ITEMS:
        raise InvalidArgument(f"{len(request.cart_product_ids)} cart_product_ids; at most {limits.MAX_CART_ITEMS}")
    if request.deadline_ms < 0 or request.deadline_ms > limits.MAX_DEADLINE_MS:
        raise InvalidArgument(f"deadline_ms must be within 0..{limits.MAX_DEADLINE_MS} (0 = server default), "
                              f"got {request.deadline_ms}")
    if len(request.placements) > limits.MAX_PLACEMENTS:
        raise InvalidArgument(f"{len(request.placements)} placements; at most {limits.MAX_PLACEMENTS} per request")
    slots: list[Slot] = []
    if request.placements:
        seen: set[str] = set()
        for index, placement in enumerate(request.placements):
            slot_id = placement.slot_id or f"slot_{index}"
            _check_id(slot_id, f"placements[{index}].slot_id")
            if slot_id in seen:
                raise InvalidArgument(f"placements[{index}].slot_id {slot_id!r} is used twice")
            seen.add(slot_id)
            candidates = placement.candidate_product_ids
            if len(candidates) > limits.MAX_CANDIDATES:
                raise InvalidArgument(f"placements[{index}] ({slot_id}) has {len(candidates)} candidate_product_ids; "
                                      f"at most {limits.MAX_CANDIDATES}")
            for position, candidate in enumerate(candidates):
                _check_id(candidate, f"placements[{index}].candidate_product_ids[{position}]")
            # A placement with candidates is ordered by Rank: it needs no strategy.
            if placement.strategy not in S.values() or (
                    placement.strategy == S.STRATEGY_UNSPECIFIED and not candidates):
                raise InvalidArgument(f"placements[{index}] ({slot_id}) needs a strategy "
                                      "(or candidate_product_ids to rank)")
            if not 0 <= placement.k <= limits.MAX_K:
                raise InvalidArgument(f"placements[{index}].k must be within 0..{limits.MAX_K} "
                                      f"(0 = {limits.DEFAULT_K}), got {placement.k}")
            # k = 0: DEFAULT_K items, or for a ranked list every candidate that qualifies.
            k = placement.k or (0 if candidates else limits.DEFAULT_K)
            slots.append(Slot(slot_id, placement.strategy, k, placement.constraints, list(candidates)))
    else:
        for slot_id, strategy in DEFAULT_PLACEMENTS[page]:
            constraints = recommend_pb2.Constraints()
            if page in CATEGORY_SCOPED_PAGES and request.category:
                constraints.include_categories.append(request.category)
            slots.append(Slot(slot_id, strategy, limits.DEFAULT_K, constraints))
    for slot in slots:
        if slot.strategy in ANCHORED and not request.product_id and not slot.candidates:
            raise InvalidArgument(f"placement {slot.slot_id} ({S.Name(slot.strategy)}) needs product_id "
                                  "(the product the page shows)")
    return slots
