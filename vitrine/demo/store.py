"""The demo store's own segments and offers, in the contract's rule language (API.md).

Category names used in rules are the catalog's (`vitrine.demo.catalog.CATEGORIES`);
a test keeps them in sync. Offer windows are relative to the demo's `now_ms`.
"""

from __future__ import annotations

from scoring.units import DAY_MS
from vitrine.v1 import segment_pb2

# (segment_id, name, description, rule, priority)
_SEGMENTS: tuple[tuple[str, str, str, str, int], ...] = (
    ("mobile_runners", "Mobile runners", "Road runners shopping on a phone",
     'context.device_type == "mobile" and category_affinity["running shoes"] > 0.3', 60),
    ("trail_runners", "Trail runners", "Shoppers into trail running",
     'category_affinity["trail shoes"] > 0.3', 55),
    ("cyclists", "Cyclists", "Road and mountain bikers",
     'category_affinity["road bikes"] > 0.2 or category_affinity["mountain bikes"] > 0.2 '
     'or category_affinity["cycling apparel"] > 0.3', 50),
    ("campers", "Campers", "Tents, sleeping bags and stoves",
     'category_affinity["camping tents"] > 0.2 or category_affinity["sleeping bags"] > 0.2 '
     'or category_affinity["camping stoves"] > 0.3', 50),
    ("yogis", "Yoga lovers", "Yoga mats, blocks and apparel",
     'category_affinity["yoga"] > 0.3 or category_affinity["yoga apparel"] > 0.3', 45),
    ("big_spenders", "Big spenders", "High average order value",
     "avg_order_value >= 150", 70),
    ("lapsed_buyers", "Lapsed buyers", "Bought before, nothing for a month",
     "purchase_count >= 1 and days_since(last_purchase_ms) > 30", 65),
    ("email_engaged", "E-mail engaged", "Clicked at least two e-mails",
     "email_clicks >= 2", 40),
    ("window_shoppers", "Window shoppers", "Visit often, never bought",
     "visit_count >= 3 and purchase_count == 0", 35),
    ("lusophone", "Portuguese speakers", "Shoppers in Brazil and Portugal",
     'context.country in ["BR", "PT"]', 20),
    ("recent_cart_no_order", "Cart this week, no order", "Added to cart in the last 7 days without buying",
     'events("ADD_TO_CART", days=7) >= 1 and events("PURCHASE", days=7) == 0', 58),
)

#: Every category name a rule above refers to (kept in sync with the catalog by a test).
RULE_CATEGORIES = ("running shoes", "trail shoes", "road bikes", "mountain bikes", "cycling apparel",
                   "camping tents", "sleeping bags", "camping stoves", "yoga", "yoga apparel")


def demo_segments() -> list[segment_pb2.Segment]:
    """The store-defined segments of the demo."""
    return [segment_pb2.Segment(segment_id=sid, name=name, description=desc, rule=rule, priority=prio)
            for sid, name, desc, rule, prio in _SEGMENTS]


def demo_offers(now_ms: int) -> list[segment_pb2.Offer]:
    """Offers for built-in and demo segments; windows around `now_ms` (one expired, one upcoming)."""
    day = DAY_MS

    def offer(offer_id: str, title: str, body: str, slot: str, segments: list[str], priority: int, *,
              coupon: str = "", starts: int = 0, ends: int = 0, **payload: str) -> segment_pb2.Offer:
        return segment_pb2.Offer(offer_id=offer_id, title=title, body=body, slot=slot, coupon_code=coupon,
                                 segment_ids=segments, priority=priority, starts_ms=starts, ends_ms=ends,
                                 payload=payload)

    return [
        offer("welcome10", "Welcome! 10% off your first order", "Use WELCOME10 at checkout.", "hero",
              ["new_visitor"], 50, coupon="WELCOME10", cta="/c/new-arrivals"),
        offer("free_shipping_cart", "Your cart ships free", "Complete your order today: shipping is on us.",
              "cart", ["cart_abandoner", "recent_cart_no_order"], 60, coupon="FREESHIP", cta="/cart"),
        offer("vip_early_access", "VIP early access", "Shop the winter collection 48 hours before anyone else.",
              "hero", ["vip"], 90, cta="/c/outdoor-jackets", collection="winter_2026"),
        offer("winback15", "We miss you: 15% off", "Come back for 15% off anything, this week only.", "banner",
              ["at_risk", "lapsed_buyers"], 70, coupon="COMEBACK15", starts=now_ms - 10 * day,
              ends=now_ms + 20 * day),
        offer("black_friday", "Black Friday: up to 40% off", "Our biggest sale of the year.", "hero",
              ["utm_campaign:black_friday_2026", "email_engaged", "returning_customer"], 80, coupon="BF2026",
              starts=now_ms - 2 * day, ends=now_ms + 7 * day, theme="dark"),
        offer("mobile_run_club", "Run club: 15% off running shoes", "Members' price on every road shoe.",
              "banner", ["mobile_runners", "trail_runners"], 65, coupon="RUN15", starts=now_ms - 7 * day,
              ends=now_ms + 14 * day, cta="/c/running-shoes"),
        offer("cycling_week", "Cycling week", "Free bike fitting with any bike over 1,000.", "banner",
              ["cyclists"], 55, starts=now_ms - 3 * day, ends=now_ms + 4 * day, cta="/c/road-bikes"),
        offer("camp_bundle", "Camp bundle: tent + sleeping bag -20%", "Bundle and save on your next trip.",
              "cart", ["campers"], 45, coupon="CAMP20", cta="/c/camping-tents"),
        offer("big_spender_gift", "A gift on us", "A free premium bottle with orders over 150.", "banner",
              ["big_spenders", "vip"], 75, gift_sku="hydration-premium"),
        offer("frete_gratis", "Frete grátis / portes grátis", "Free shipping to Brazil and Portugal.", "banner",
              ["lusophone", "geo:BR", "geo:PT"], 30),
        offer("summer_sale_2026", "Summer sale", "Ended: kept to show offer windows.", "hero",
              ["returning_visitor"], 40, starts=now_ms - 120 * day, ends=now_ms - 60 * day),
        offer("christmas_preview", "Christmas gift guide", "Upcoming: gifts for every athlete.", "hero",
              ["registered", "email_engaged"], 40, starts=now_ms + 20 * day, ends=now_ms + 50 * day),
    ]
