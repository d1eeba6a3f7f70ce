"""Built-in segments: rule-based ones written in the rule language, and context-derived families.

The thresholds are the named constants of `config.py`; README.md gives each definition
in words. Built-in ids (and the `source:`, `device:`, `geo:`, `utm_campaign:` prefixes)
are reserved: a store cannot overwrite or delete them.
"""

from __future__ import annotations

import dataclasses
import operator

from services.segmentation import config as cfg
from vitrine.v1 import common_pb2


@dataclasses.dataclass(frozen=True)
class BuiltinSegment:
    segment_id: str
    name: str
    description: str
    rule: str
    priority: int


def rule_segments(cart_abandon_minutes: int = cfg.CART_ABANDON_MINUTES,
                  at_risk_quiet_days: int = cfg.AT_RISK_QUIET_DAYS) -> tuple[BuiltinSegment, ...]:
    p = cfg.BUILTIN_PRIORITIES
    registered = 'registered or customer_id != ""'
    return (
        BuiltinSegment(
            "new_visitor", "New visitor", "First visit (or none recorded) and no purchase yet.",
            f"visit_count <= {cfg.NEW_VISITOR_MAX_VISITS} and purchase_count == 0", p["new_visitor"]),
        BuiltinSegment(
            "returning_visitor", "Returning visitor", "Came back at least once, has never bought.",
            f"visit_count >= {cfg.RETURNING_MIN_VISITS} and purchase_count == 0", p["returning_visitor"]),
        BuiltinSegment(
            "returning_customer", "Returning customer", "Has bought, and has visited more than once.",
            f"purchase_count >= 1 and visit_count >= {cfg.RETURNING_MIN_VISITS}", p["returning_customer"]),
        BuiltinSegment(
            "registered", "Registered", "Has an account (registered, or identified with a customer id).",
            registered, p["registered"]),
        BuiltinSegment(
            "guest", "Guest", "No account: neither registered nor identified.",
            f"not ({registered})", p["guest"]),
        BuiltinSegment(
            "vip", "VIP", "Top RFM: recency + frequency + monetary scores of "
            f"{cfg.VIP_MIN_RFM_TOTAL} or more (of 15), with at least {cfg.VIP_MIN_PURCHASES} purchases.",
            f"rfm.r_score + rfm.f_score + rfm.m_score >= {cfg.VIP_MIN_RFM_TOTAL} "
            f"and purchase_count >= {cfg.VIP_MIN_PURCHASES}", p["vip"]),
        BuiltinSegment(
            "at_risk", "At risk", f"A good customer ({cfg.AT_RISK_MIN_PURCHASES}+ purchases or monetary "
            f"score {cfg.AT_RISK_MIN_M_SCORE}+) with no purchase for {at_risk_quiet_days} days or more.",
            f"(purchase_count >= {cfg.AT_RISK_MIN_PURCHASES} or rfm.m_score >= {cfg.AT_RISK_MIN_M_SCORE}) "
            f"and purchase_count >= 1 and days_since(last_purchase_ms) >= {at_risk_quiet_days}", p["at_risk"]),
        BuiltinSegment(
            "cart_abandoner", "Cart abandoner", f"Items in the cart, cart untouched for {cart_abandon_minutes} "
            "minutes or more, and no checkout since the last cart change.",
            f"cart_size > 0 and minutes_since(last_cart_change_ms) >= {cart_abandon_minutes} "
            "and last_checkout_ms < last_cart_change_ms", p["cart_abandoner"]),
    )


@dataclasses.dataclass(frozen=True)
class ContextFamily:
    prefix: str          # "source", ...
    field: str           # Context field path, e.g. "utm.campaign"
    description: str

    @property
    def priority(self) -> int:
        return cfg.BUILTIN_PRIORITIES[self.prefix]

    def estimate_rule(self, value: str) -> str:
        """The rule EstimateSize uses for `<prefix>:<value>` (no request context in a scan)."""
        return f"last_context.{self.field} == {_quote(value)}"

    def match_rule(self, value: str) -> str:
        """The rule that is true when Evaluate puts the shopper in `<prefix>:<value>` (a valid value):
        the request's field, or the profile's last_context one when the request leaves it empty."""
        q = _quote(value)
        return f'context.{self.field} == {q} or (context.{self.field} == "" and last_context.{self.field} == {q})'


CONTEXT_FAMILIES = (
    ContextFamily("source", "traffic_source", "Traffic source of this visit (context.traffic_source)."),
    ContextFamily("device", "device_type", "Device type of this visit (context.device_type)."),
    ContextFamily("geo", "country", "Country of this visit (context.country, ISO 3166-1 alpha-2)."),
    ContextFamily("utm_campaign", "utm.campaign", "UTM campaign of the landing URL (context.utm.campaign)."),
)
FAMILY_BY_PREFIX = {f.prefix: f for f in CONTEXT_FAMILIES}
RULE_BUILTIN_IDS = frozenset(s.segment_id for s in rule_segments())


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def split_family(segment_id: str) -> tuple[ContextFamily, str] | None:
    """(family, value) for ids such as "geo:FR"; None for anything else."""
    prefix, sep, value = segment_id.partition(":")
    family = FAMILY_BY_PREFIX.get(prefix)
    if not sep or family is None:
        return None
    return family, value


def is_reserved(segment_id: str) -> bool:
    return segment_id in RULE_BUILTIN_IDS or split_family(segment_id) is not None


def valid_context_value(value: str) -> bool:
    return 0 < len(value) <= cfg.MAX_CONTEXT_VALUE_CHARS and value.isprintable()


_BEST_FIRST = sorted(CONTEXT_FAMILIES, key=lambda f: (-f.priority, f.prefix))  # the order Evaluate merges in
_FAMILY_VALUES = operator.attrgetter(*(f.field for f in _BEST_FIRST))
_FAMILY_KEYS = tuple((f.priority, f.prefix + ":") for f in _BEST_FIRST)
# Context values repeat across requests (a few devices, countries, sources, campaigns): the
# segments of the last few distinct value tuples, so a request does not rebuild the same ids.
_CACHE_SIZE = 256
_cache: dict[tuple[tuple[str, ...], tuple[str, ...] | None], tuple[tuple[int, str], ...]] = {}


def context_segments(profile: common_pb2.Profile, context: common_pb2.Context) -> tuple[tuple[int, str], ...]:
    """(priority, segment_id) of the context-derived built-ins, best first: the request context's
    value, or the profile's last_context value when the request leaves that field empty."""
    values = _FAMILY_VALUES(context)
    # last_context matters only for the fields the request leaves empty: often none.
    key = (values, _FAMILY_VALUES(profile.last_context) if "" in values else None)
    found = _cache.get(key)
    if found is None:
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()  # bounded; refilling costs one miss per distinct tuple
        found = _cache[key] = _context_segments(values, key[1] or values)
    return found


def _context_segments(values: tuple[str, ...], lasts: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    out = []
    for (priority, prefix), value, last in zip(_FAMILY_KEYS, values, lasts, strict=True):
        value = value or last
        if valid_context_value(value):
            out.append((priority, prefix + value))
    return tuple(out)
