"""The profile as a pure fold over the event log, plus the merge of two profiles.

`apply_event(state, event, ...)` changes one `StoredProfile` by one event; `merge_into`
merges one stored profile into another; `public_view` turns the stored form into the
`Profile` callers see (affinity shares, window counts, RFM). No I/O, no clock, no grpc:
given the same events in the same order, the same profile.

The fold speaks protobuf because the stored profile *is* a protobuf message; going
through a dataclass would cost a conversion each way on the ingest hot path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, MutableSequence, Sequence
from typing import Any

from scoring.units import DAY_MS
from services.common.errors import InvalidArgument
from services.profile import config as C
from vitrine.v1 import common_pb2, profile_pb2

ET = common_pb2.EventType
N_TYPES = max(ET.values()) + 1
PAGE_VIEW, PRODUCT_VIEW, CATEGORY_VIEW, SEARCH = ET.PAGE_VIEW, ET.PRODUCT_VIEW, ET.CATEGORY_VIEW, ET.SEARCH
ADD_TO_CART, REMOVE_FROM_CART, CHECKOUT, PURCHASE = ET.ADD_TO_CART, ET.REMOVE_FROM_CART, ET.CHECKOUT, ET.PURCHASE
COUPON_APPLIED, EMAIL_OPEN, EMAIL_CLICK = ET.COUPON_APPLIED, ET.EMAIL_OPEN, ET.EMAIL_CLICK

# How much an event says about interest in its category.
AFFINITY_WEIGHTS = {
    ET.CATEGORY_VIEW: 0.5,
    ET.PRODUCT_VIEW: 1.0,
    ET.ADD_TO_CART: 3.0,
    ET.PURCHASE: 5.0,
}
# Rescale stored affinity scores when their exponent grows past this many half-lives.
_AFFINITY_RESCALE_HALF_LIVES = 30.0

# Events that do not mean the shopper was on the site (not a visit, not "seen").
OFF_SITE_TYPES = frozenset({ET.EMAIL_OPEN})

FLAG_NO_PERSONALIZATION = 1  # stored with an event: personalization was withdrawn when it arrived


@dataclasses.dataclass(frozen=True)
class FoldSettings:
    affinity_half_life_ms: float = C.DEFAULT_AFFINITY_HALF_LIFE_DAYS * DAY_MS
    visit_timeout_ms: int = C.VISIT_TIMEOUT_MS


def new_state(user_id: str) -> profile_pb2.StoredProfile:
    """An empty profile with the default consent (personalization on, marketing off)."""
    state = profile_pb2.StoredProfile()
    state.profile.user_id = user_id
    state.profile.consent.personalization = True
    return state


def _position_by_time(times: Sequence[int], t: int) -> int:
    """Where an item at `t` goes in a newest-first list: behind every newer item (a late event
    goes behind what came after it), in front of the rest."""
    pos = 0
    if times and times[0] > t:
        n = len(times)
        while pos < n and times[pos] > t:
            pos += 1
    return pos


def _push_recent(ids: MutableSequence[str], times: MutableSequence[int], item: str, t: int, limit: int) -> None:
    """Newest-first bounded list without duplicates, `times` parallel to `ids`."""
    if item in ids:
        i = list(ids).index(item)
        if times[i] >= t:
            return
        del ids[i]
        del times[i]
    pos = _position_by_time(times, t)
    if pos >= limit:
        return
    ids.insert(pos, item)
    times.insert(pos, t)
    if len(ids) > limit:
        del ids[limit:]
        del times[limit:]


def _view_counts(state: profile_pb2.StoredProfile) -> list[int]:
    """Views per recently viewed product; a profile stored before the counts existed counts 1 each."""
    counts = state.recently_viewed_counts
    n = len(state.profile.recently_viewed)
    return list(counts) if len(counts) == n else [1] * n


def _push_viewed(state: profile_pb2.StoredProfile, product_id: str, t: int) -> None:
    """A PRODUCT_VIEW: `recently_viewed` newest first (as _push_recent) with a view count per
    product, counted from when it entered the list (one that falls out starts again at 1)."""
    p = state.profile
    ids, times, counts = p.recently_viewed, state.recently_viewed_ms, state.recently_viewed_counts
    if len(counts) != len(ids):  # stored before the counts existed
        _set_list(counts, [1] * len(ids))
    count = 1
    if product_id in ids:
        i = list(ids).index(product_id)
        count = min(counts[i] + 1, COUNT_CEILING_32)
        if times[i] >= t:  # a late view of a product seen since: counted, the position stays
            counts[i] = count
            return
        del ids[i]
        del times[i]
        del counts[i]
    pos = _position_by_time(times, t)
    limit = C.RECENTLY_VIEWED_LENGTH
    if pos < limit:
        ids.insert(pos, product_id)
        times.insert(pos, t)
        counts.insert(pos, count)
        if len(ids) > limit:
            del ids[limit:]
            del times[limit:]
            del counts[limit:]


def _add_daily(profile: common_pb2.Profile, day: int, etype: int, count: int = 1) -> None:
    """Per (UTC day, type) counts for the last DAILY_COUNT_DAYS days, kept in day order
    (types within a day in first-seen order)."""
    daily = profile.daily_events
    n = len(daily)
    if n:
        last_day = daily[n - 1].day
        if day >= last_day:
            if day == last_day:
                for i in range(n - 1, -1, -1):
                    entry = daily[i]
                    if entry.day != day:
                        break
                    if entry.type == etype:
                        entry.count += count
                        return
            daily.add(day=day, type=etype, count=count)
            if day != last_day and daily[0].day <= day - C.DAILY_COUNT_DAYS:
                _rebuild_daily(profile, [])
            return
        for i in range(n - 2, -1, -1):
            entry = daily[i]
            if entry.day < day:
                break
            if entry.day == day and entry.type == etype:
                entry.count += count
                return
        _rebuild_daily(profile, [(day, etype, count)])
        return
    daily.add(day=day, type=etype, count=count)


def _rebuild_daily(profile: common_pb2.Profile, extra: list[tuple[int, int, int]]) -> None:
    counts: dict[tuple[int, int], int] = {}
    for e in profile.daily_events:
        counts[(e.day, e.type)] = counts.get((e.day, e.type), 0) + e.count
    for d, k, c in extra:
        counts[(d, k)] = counts.get((d, k), 0) + c
    if not counts:
        return
    newest = max(d for d, _ in counts)
    del profile.daily_events[:]
    for (d, k), c in sorted(counts.items()):
        if d > newest - C.DAILY_COUNT_DAYS:
            profile.daily_events.add(day=d, type=k, count=min(c, COUNT_CEILING_32))


def _add_affinity(profile: common_pb2.Profile, category: str, weight: float, t: int, half_life_ms: float) -> None:
    """Scores are stored as weight * 2**((t - ref)/half_life): no need to decay every entry on each
    event; shares (score / sum) are the time-decayed affinity. Rescaled when the exponent grows."""
    aff = profile.category_affinity
    ref = profile.affinity_updated_ms
    if ref == 0 or not aff:
        ref = profile.affinity_updated_ms = t
    exponent = (t - ref) / half_life_ms
    if exponent > _AFFINITY_RESCALE_HALF_LIVES:
        factor = 2.0 ** -exponent
        for key in list(aff):
            value = aff[key] * factor
            if value < 1e-9:
                del aff[key]
            else:
                aff[key] = value
        profile.affinity_updated_ms = ref = t
        exponent = 0.0
    aff[category] = aff.get(category, 0.0) + weight * 2.0 ** max(exponent, -1000.0)
    if len(aff) > C.AFFINITY_CATEGORIES:
        smallest = min(aff, key=aff.__getitem__)
        del aff[smallest]


def _cart_add(profile: common_pb2.Profile, product_id: str, quantity: int, price: float, t: int) -> None:
    for item in profile.cart:
        if item.product_id == product_id:
            item.quantity += quantity
            if price > 0:
                item.price = price
            item.added_ms = max(item.added_ms, t)
            return
    profile.cart.add(product_id=product_id, quantity=quantity, price=price, added_ms=t)
    if len(profile.cart) > C.CART_ITEMS:
        oldest = min(range(len(profile.cart)), key=lambda i: profile.cart[i].added_ms)
        del profile.cart[oldest]


def _cart_remove(profile: common_pb2.Profile, product_id: str, quantity: int | None) -> bool:
    for i, item in enumerate(profile.cart):
        if item.product_id == product_id:
            if quantity is None or item.quantity <= quantity:
                del profile.cart[i]
            else:
                item.quantity -= quantity
            return True
    return False


def _update_averages(profile: common_pb2.Profile) -> None:
    profile.avg_order_value = profile.total_spend / profile.purchase_count if profile.purchase_count else 0.0
    profile.avg_session_spend = (
        profile.total_spend / profile.purchase_sessions if profile.purchase_sessions else 0.0
    )


def apply_event(
    state: profile_pb2.StoredProfile,
    event: common_pb2.Event,
    flags: int = 0,
    settings: FoldSettings = FoldSettings(),
) -> None:
    """Fold one validated event into `state`. `flags & FLAG_NO_PERSONALIZATION`: the shopper had
    withdrawn personalization; the behavioural signals (recently viewed, searches, affinity) are
    left alone, the account history (counts, cart, orders, spend) is kept."""
    p = state.profile
    t = event.timestamp_ms
    etype = event.type
    personal = not flags & FLAG_NO_PERSONALIZATION

    p.event_count += 1
    totals = state.type_totals
    if len(totals) < N_TYPES:
        totals.extend([0] * (N_TYPES - len(totals)))
    totals[etype] += 1
    _add_daily(p, t // DAY_MS, etype)

    if etype not in OFF_SITE_TYPES:
        last_seen = p.last_seen_ms
        session = event.session_id
        if p.visit_count == 0:
            new_visit = True
        elif t >= last_seen:
            new_visit = (session and session != p.last_session_id) or t - last_seen > settings.visit_timeout_ms
        else:  # a late event: only a different session can make it a visit of its own
            new_visit = bool(session) and session != p.last_session_id and t < p.first_seen_ms
        if new_visit:
            p.visit_count += 1
        if t >= last_seen:
            p.last_seen_ms = t
            if session and new_visit:
                p.last_session_id = session
        if p.first_seen_ms == 0 or t < p.first_seen_ms:
            p.first_seen_ms = t
        if event.HasField("context"):
            if state.first_context_ms == 0 or t < state.first_context_ms:
                p.first_context.CopyFrom(event.context)
                state.first_context_ms = t
            if t >= state.last_context_ms:
                p.last_context.CopyFrom(event.context)
                state.last_context_ms = t

    category = event.category
    if category and personal and etype in AFFINITY_WEIGHTS:
        _add_affinity(p, category, AFFINITY_WEIGHTS[etype], t, settings.affinity_half_life_ms)

    if etype == PRODUCT_VIEW:
        if personal:
            _push_viewed(state, event.product_id, t)
    elif etype == SEARCH:
        if personal:
            _push_recent(p.recent_searches, state.recent_searches_ms, event.query, t, C.RECENT_SEARCHES_LENGTH)
    elif etype == ADD_TO_CART:
        _cart_add(p, event.product_id, event.quantity or 1, event.price, t)
        p.last_cart_change_ms = max(p.last_cart_change_ms, t)
    elif etype == REMOVE_FROM_CART:
        if _cart_remove(p, event.product_id, event.quantity or 1):
            p.last_cart_change_ms = max(p.last_cart_change_ms, t)
    elif etype == CHECKOUT:
        p.last_checkout_ms = max(p.last_checkout_ms, t)
    elif etype == PURCHASE:
        order_id = event.order_id
        if order_id not in state.recent_order_ids:
            p.purchase_count += 1
            state.recent_order_ids.insert(0, order_id)
            del state.recent_order_ids[C.RECENT_ORDER_IDS_LENGTH:]
            if state.last_purchase_visit != p.visit_count or p.purchase_sessions == 0:
                p.purchase_sessions += 1
                state.last_purchase_visit = p.visit_count
        p.total_spend += event.price * (event.quantity or 1)
        p.last_purchase_ms = max(p.last_purchase_ms, t)
        _push_recent(p.purchased_product_ids, state.purchased_ms, event.product_id, t, C.PURCHASED_IDS_LENGTH)
        if _cart_remove(p, event.product_id, None):
            p.last_cart_change_ms = max(p.last_cart_change_ms, t)
        _update_averages(p)
    elif etype == COUPON_APPLIED:
        p.coupon_uses += 1
    elif etype == EMAIL_OPEN:
        p.email_opens += 1
    elif etype == EMAIL_CLICK:
        p.email_clicks += 1
        p.last_email_click_ms = max(p.last_email_click_ms, t)


# ---------------------------------------------------------------------------------------------
# Merge


def _merge_recent(ids_a: Sequence[str], times_a: Sequence[int], ids_b: Sequence[str], times_b: Sequence[int],
                  limit: int) -> tuple[list[str], list[int]]:
    pairs = sorted(zip(list(times_a) + list(times_b), list(ids_a) + list(ids_b), strict=True),
                   key=lambda x: -x[0])
    seen: set[str] = set()
    out_ids: list[str] = []
    out_times: list[int] = []
    for t, item in pairs:
        if item in seen:
            continue
        seen.add(item)
        out_ids.append(item)
        out_times.append(t)
        if len(out_ids) == limit:
            break
    return out_ids, out_times


def _times_for(ids: Sequence[str], times: Sequence[int], fallback_ms: int) -> list[int]:
    """Item times, or (for an imported Profile without them) times spaced back from `fallback_ms`."""
    if len(times) == len(ids):
        return list(times)
    return [fallback_ms - i for i in range(len(ids))]


def _set_list(target: MutableSequence[Any], values: Iterable[Any]) -> None:
    del target[:]
    target.extend(values)


# Merged counters saturate here, half the int32/int64 range, so the +1 of every later event
# still fits (a billion more events of one shopper before the type's limit).
COUNT_CEILING_32 = 2**30
COUNT_CEILING_64 = 2**62


def saturating_add(x: int, y: int, wide: bool = False) -> int:
    """x + y capped at the ceiling: merges repeat, so counters that passed the import range checks
    (import_checks.py) can still add up past the field's type."""
    return min(x + y, COUNT_CEILING_64 if wide else COUNT_CEILING_32)


def merge_into(
    into: profile_pb2.StoredProfile, other: profile_pb2.StoredProfile, settings: FoldSettings = FoldSettings()
) -> None:
    """Merge `other` (e.g. the anonymous profile) into `into` (the customer's): counters add up,
    lists merge by time, the newer context and session win, the newer consent decision wins,
    `into`'s traits win over `other`'s. `into.profile.user_id` is kept."""
    a, b = into.profile, other.profile
    newer_is_b = b.last_seen_ms > a.last_seen_ms
    # Is the newer side's current visit one with a purchase? Then the merged current visit is.
    newer_buying = (other.last_purchase_visit == b.visit_count > 0) if newer_is_b else (
        into.last_purchase_visit == a.visit_count > 0)

    for name in ("visit_count", "event_count", "purchase_count", "email_opens", "email_clicks",
                 "purchase_sessions", "coupon_uses"):
        setattr(a, name, saturating_add(getattr(a, name), getattr(b, name), name == "event_count"))
    a.total_spend += b.total_spend
    for name in ("last_seen_ms", "last_purchase_ms", "last_cart_change_ms", "last_checkout_ms",
                 "last_email_click_ms"):
        setattr(a, name, max(getattr(a, name), getattr(b, name)))
    if b.first_seen_ms and (a.first_seen_ms == 0 or b.first_seen_ms < a.first_seen_ms):
        a.first_seen_ms = b.first_seen_ms
    _update_averages(a)

    totals = [0] * N_TYPES
    for src in (into.type_totals, other.type_totals):
        for i, v in enumerate(src[:N_TYPES]):
            totals[i] = saturating_add(totals[i], v, True)
    _set_list(into.type_totals, totals)

    views: dict[str, int] = {}
    for side in (into, other):
        for product, n in zip(side.profile.recently_viewed, _view_counts(side), strict=True):
            views[product] = min(views.get(product, 0) + n, COUNT_CEILING_32)
    for ids_name, times_name, limit in (
        ("recently_viewed", "recently_viewed_ms", C.RECENTLY_VIEWED_LENGTH),
        ("purchased_product_ids", "purchased_ms", C.PURCHASED_IDS_LENGTH),
        ("recent_searches", "recent_searches_ms", C.RECENT_SEARCHES_LENGTH),
    ):
        ids_a, ids_b = getattr(a, ids_name), getattr(b, ids_name)
        times_a = _times_for(ids_a, getattr(into, times_name), a.last_seen_ms)
        times_b = _times_for(ids_b, getattr(other, times_name), b.last_seen_ms)
        ids, times = _merge_recent(ids_a, times_a, ids_b, times_b, limit)
        _set_list(ids_a, ids)
        _set_list(getattr(into, times_name), times)
    _set_list(into.recently_viewed_counts, [views[product] for product in a.recently_viewed])

    orders = list(into.recent_order_ids)
    for order in other.recent_order_ids:
        if order not in orders:
            orders.append(order)
    _set_list(into.recent_order_ids, orders[: C.RECENT_ORDER_IDS_LENGTH])

    # Affinity: bring both to the later reference time, then add.
    if b.category_affinity:
        ref_a, ref_b = a.affinity_updated_ms, b.affinity_updated_ms
        ref = max(ref_a, ref_b)
        half_life = settings.affinity_half_life_ms
        scale_a = 2.0 ** (-(ref - ref_a) / half_life) if a.category_affinity else 1.0
        scale_b = 2.0 ** (-(ref - ref_b) / half_life)
        merged = {k: v * scale_a for k, v in a.category_affinity.items()}
        for k, share in b.category_affinity.items():
            merged[k] = merged.get(k, 0.0) + share * scale_b
        top = sorted(merged.items(), key=lambda kv: -kv[1])[: C.AFFINITY_CATEGORIES]
        a.category_affinity.clear()
        a.category_affinity.update(dict(top))
        a.affinity_updated_ms = ref

    cart = {item.product_id: item for item in a.cart}
    for item in b.cart:
        mine = cart.get(item.product_id)
        if mine is None or item.added_ms > mine.added_ms:
            cart[item.product_id] = item
    items = sorted(cart.values(), key=lambda i: -i.added_ms)[: C.CART_ITEMS]
    copies = [common_pb2.CartItem(product_id=i.product_id, quantity=i.quantity, price=i.price,
                                  added_ms=i.added_ms) for i in sorted(items, key=lambda i: i.added_ms)]
    del a.cart[:]
    a.cart.extend(copies)

    if b.daily_events:
        _rebuild_daily(a, [(e.day, e.type, e.count) for e in b.daily_events])

    # Contexts: the earlier first context, the newer last context.
    if other.first_context_ms and (into.first_context_ms == 0 or other.first_context_ms < into.first_context_ms):
        a.first_context.CopyFrom(b.first_context)
        into.first_context_ms = other.first_context_ms
    elif not a.HasField("first_context") and b.HasField("first_context"):
        a.first_context.CopyFrom(b.first_context)
    if b.HasField("last_context") and (other.last_context_ms > into.last_context_ms
                                       or not a.HasField("last_context")):
        a.last_context.CopyFrom(b.last_context)
        into.last_context_ms = other.last_context_ms
    if newer_is_b and b.last_session_id:
        a.last_session_id = b.last_session_id
    into.last_purchase_visit = a.visit_count if newer_buying else 0

    if b.consent.updated_ms > a.consent.updated_ms:
        a.consent.CopyFrom(b.consent)

    traits = dict(b.traits)
    traits.update(a.traits)
    a.traits.clear()
    a.traits.update(dict(list(traits.items())[: C.MAX_TRAITS]))

    aliases = list(a.aliases)
    for alias in (b.user_id, *b.aliases):
        if alias and alias != a.user_id and alias not in aliases:
            aliases.append(alias)
    _set_list(a.aliases, aliases[-C.MAX_ALIASES:])
    if b.registered:
        a.registered = True
        if not a.customer_id:
            a.customer_id = b.customer_id


# ---------------------------------------------------------------------------------------------
# Account rules (Identify, SetConsent, ImportProfile): the domain decisions, apart from storage


def set_traits(profile: common_pb2.Profile, traits: Mapping[str, str]) -> None:
    """Identify's traits win over the stored ones (last write wins); at most MAX_TRAITS in all,
    else INVALID_ARGUMENT and the profile is unchanged."""
    if not traits:
        return
    merged = dict(profile.traits)
    merged.update(traits)
    if len(merged) > C.MAX_TRAITS:
        raise InvalidArgument(f"traits: the profile would have {len(merged)} traits; "
                              f"at most {C.MAX_TRAITS} are allowed")
    profile.traits.update(traits)


def register(profile: common_pb2.Profile, customer_id: str) -> bool:
    """Mark the profile as a registered customer's; True when it was not registered before."""
    first = not profile.registered
    profile.registered = True
    if not profile.customer_id:
        profile.customer_id = customer_id
    return first


def apply_consent(state: profile_pb2.StoredProfile, consent: common_pb2.Consent, now_ms: int) -> bool:
    """Store a consent decision made at `consent.updated_ms` (0 = now). A decision older than the
    stored one is ignored (False). Withdrawing personalization forgets the behavioural signals."""
    updated = consent.updated_ms or now_ms
    current = state.profile.consent
    if updated < current.updated_ms:
        return False
    was_on = current.personalization
    current.CopyFrom(consent)
    current.updated_ms = updated
    if was_on and not consent.personalization:
        clear_behaviour(state)
    return True


def imported_state(profile: common_pb2.Profile, user_id: str,
                   into: profile_pb2.StoredProfile) -> profile_pb2.StoredProfile:
    """A public Profile read on another shard as a StoredProfile that merge_into can add to `into`:
    all-time totals from its event counts (or daily counts), list item times from its seen times,
    view counts beside the list, and its affinity shares scaled to `into`'s stored magnitude."""
    other = profile_pb2.StoredProfile()
    other.profile.CopyFrom(profile)
    other.profile.user_id = user_id
    del other.profile.event_counts[:]
    other.recently_viewed_counts.extend(profile.recently_viewed_counts)
    del other.profile.recently_viewed_counts[:]
    other.first_context_ms = profile.first_seen_ms
    other.last_context_ms = profile.last_seen_ms
    totals = [0] * N_TYPES
    if profile.event_counts:
        for row in profile.event_counts:
            if 0 < row.type < N_TYPES:
                totals[row.type] += row.total
    else:
        for day in profile.daily_events:
            if 0 < day.type < N_TYPES:
                totals[day.type] += day.count
    other.type_totals.extend(totals)
    # The imported map holds shares (they sum to 1); the stored one holds decayed scores.
    if other.profile.category_affinity and into.profile.category_affinity:
        scale = sum(into.profile.category_affinity.values())
        for key in list(other.profile.category_affinity):
            other.profile.category_affinity[key] *= scale
    return other


def clear_behaviour(state: profile_pb2.StoredProfile) -> None:
    """Forget the personalization signals (used when personalization consent is withdrawn)."""
    p = state.profile
    del p.recently_viewed[:]
    del state.recently_viewed_ms[:]
    del state.recently_viewed_counts[:]
    del p.recent_searches[:]
    del state.recent_searches_ms[:]
    p.category_affinity.clear()
    p.affinity_updated_ms = 0


# ---------------------------------------------------------------------------------------------
# Read-time view

RfmScorer = Callable[[int, int, float], tuple[int, int, int]]


def rfm_of(profile: common_pb2.Profile, now_ms: int, scorer: RfmScorer | None) -> common_pb2.Rfm:
    """Recency in days since the last purchase (-1: never purchased), frequency = orders,
    monetary = total spend; scores 1..5 from the population sketch (1 for non-buyers)."""
    if profile.purchase_count <= 0:
        return common_pb2.Rfm(recency_days=-1.0, frequency=0, monetary=profile.total_spend,
                              r_score=1, f_score=1, m_score=1)
    recency = max(0.0, (now_ms - profile.last_purchase_ms) / DAY_MS)
    r, f, m = (3, 3, 3) if scorer is None else scorer(
        profile.last_purchase_ms // DAY_MS, profile.purchase_count, profile.total_spend
    )
    return common_pb2.Rfm(recency_days=round(recency, 3), frequency=profile.purchase_count,
                          monetary=profile.total_spend, r_score=r, f_score=f, m_score=m)


def window_counts(profile: common_pb2.Profile, totals: Sequence[int],
                  now_ms: int) -> list[common_pb2.EventWindowCounts]:
    """Per event type: events today and in the last 7, 30 and 90 days (UTC days, today included)."""
    today = now_ms // DAY_MS
    windows = C.EVENT_WINDOWS_DAYS
    by_type: dict[int, list[int]] = {}
    for e in profile.daily_events:
        age = today - e.day
        if age < 0:
            age = 0
        row = by_type.setdefault(e.type, [0] * len(windows))
        for i, w in enumerate(windows):
            if age < w:
                row[i] += e.count
    out = []
    for etype in range(1, N_TYPES):
        total = totals[etype] if etype < len(totals) else 0
        sums = by_type.get(etype)
        if not total and sums is None:
            continue
        row = [min(n, COUNT_CEILING_32) for n in sums or [0] * len(windows)]  # 90 saturated days must fit int32
        out.append(common_pb2.EventWindowCounts(type=common_pb2.EventType.ValueType(etype), last_1d=row[0],
                                                last_7d=row[1], last_30d=row[2], last_90d=row[3], total=total))
    return out


def affinity_shares(raw: Mapping[str, float]) -> dict[str, float]:
    total = sum(raw.values())
    if total <= 0 or not math.isfinite(total):
        return {}
    return {k: round(v / total, 6) for k, v in raw.items()}


def public_view(state: profile_pb2.StoredProfile, now_ms: int, scorer: RfmScorer | None = None) -> common_pb2.Profile:
    """The Profile callers see: stored fields plus affinity as shares of the time-decayed total,
    event window counts and RFM scored against the current population."""
    out = common_pb2.Profile()
    out.CopyFrom(state.profile)
    out.category_affinity.clear()
    out.category_affinity.update(affinity_shares(state.profile.category_affinity))
    del out.event_counts[:]
    out.event_counts.extend(window_counts(state.profile, state.type_totals, now_ms))
    out.rfm.CopyFrom(rfm_of(state.profile, now_ms, scorer))
    _set_list(out.recently_viewed_counts, _view_counts(state))
    return out


def rfm_key(profile: common_pb2.Profile) -> tuple[int, int, float] | None:
    """What the RFM sketch holds for a profile: (last purchase day, orders, spend), None for non-buyers."""
    if profile.purchase_count <= 0:
        return None
    return profile.last_purchase_ms // DAY_MS, profile.purchase_count, profile.total_spend


__all__ = [
    "FLAG_NO_PERSONALIZATION",
    "FoldSettings",
    "apply_event",
    "clear_behaviour",
    "merge_into",
    "new_state",
    "public_view",
    "rfm_key",
]
