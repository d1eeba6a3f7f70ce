"""Synthetic shoppers: interests, budget, device, geography, traffic source and identity.

Shoppers are drawn in vectorized chunks (`DemoConfig.chunk_size`), each chunk from its own
seeded NumPy generator, so shopper i is the same whatever part of the population is read
and a million shoppers stream without being held in memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from vitrine.demo.catalog import Catalog, complement_indices
from vitrine.demo.config import DemoConfig
from vitrine.v1 import common_pb2

# ---------------------------------------------------------------- devices
DEVICE_MIX = (("mobile", 0.60), ("desktop", 0.32), ("tablet", 0.08))
# device -> [(os, share, [(browser, share)], [(width, height)])]
DEVICE_PROFILES: dict[str, list[tuple[str, float, list[tuple[str, float]], list[tuple[int, int]]]]] = {
    "mobile": [
        ("iOS", 0.45, [("Safari", 0.85), ("Chrome", 0.15)], [(390, 844), (393, 852), (430, 932), (375, 667)]),
        ("Android", 0.55, [("Chrome", 0.80), ("Samsung Internet", 0.15), ("Firefox", 0.05)],
         [(360, 800), (412, 915), (384, 854), (360, 780)]),
    ],
    "desktop": [
        ("Windows", 0.65, [("Chrome", 0.65), ("Edge", 0.25), ("Firefox", 0.10)],
         [(1920, 1080), (1366, 768), (1536, 864), (2560, 1440)]),
        ("macOS", 0.28, [("Safari", 0.50), ("Chrome", 0.45), ("Firefox", 0.05)],
         [(1440, 900), (1512, 982), (1728, 1117), (2560, 1440)]),
        ("Linux", 0.07, [("Firefox", 0.55), ("Chrome", 0.45)], [(1920, 1080), (2560, 1440)]),
    ],
    "tablet": [
        ("iPadOS", 0.60, [("Safari", 0.90), ("Chrome", 0.10)], [(810, 1080), (820, 1180), (1024, 1366)]),
        ("Android", 0.40, [("Chrome", 0.85), ("Samsung Internet", 0.15)], [(800, 1280), (1200, 1920)]),
    ],
}

# ---------------------------------------------------------------- geography
# country -> (share, language, currency, budget factor, [(region, [cities])])
COUNTRIES: dict[str, tuple[float, str, str, float, list[tuple[str, list[str]]]]] = {
    "BR": (0.22, "pt-BR", "BRL", 0.80, [("BR-SP", ["São Paulo", "Campinas"]), ("BR-RJ", ["Rio de Janeiro",
           "Niterói"]), ("BR-MG", ["Belo Horizonte"]), ("BR-RS", ["Porto Alegre"]), ("BR-PR", ["Curitiba"])]),
    "US": (0.18, "en-US", "USD", 1.20, [("US-CA", ["Los Angeles", "San Francisco"]), ("US-NY", ["New York"]),
           ("US-TX", ["Austin", "Houston"]), ("US-CO", ["Denver", "Boulder"]), ("US-WA", ["Seattle"])]),
    "DE": (0.14, "de-DE", "EUR", 1.10, [("DE-BY", ["München", "Nürnberg"]), ("DE-BE", ["Berlin"]),
           ("DE-HH", ["Hamburg"]), ("DE-NW", ["Köln", "Düsseldorf"])]),
    "PT": (0.10, "pt-PT", "EUR", 0.85, [("PT-11", ["Lisboa", "Sintra"]), ("PT-13", ["Porto"]),
           ("PT-03", ["Braga"]), ("PT-08", ["Faro"])]),
    "FR": (0.10, "fr-FR", "EUR", 1.05, [("FR-IDF", ["Paris"]), ("FR-ARA", ["Lyon", "Grenoble", "Annecy"]),
           ("FR-PAC", ["Marseille", "Nice"])]),
    "GB": (0.10, "en-GB", "GBP", 1.10, [("GB-ENG", ["London", "Manchester", "Bristol"]),
           ("GB-SCT", ["Edinburgh", "Glasgow"])]),
    "ES": (0.09, "es-ES", "EUR", 0.90, [("ES-MD", ["Madrid"]), ("ES-CT", ["Barcelona", "Girona"]),
           ("ES-AN", ["Sevilla", "Málaga"]), ("ES-VC", ["Valencia"])]),
    "IT": (0.04, "it-IT", "EUR", 1.00, [("IT-25", ["Milano", "Bergamo"]), ("IT-62", ["Roma"])]),
    "NL": (0.03, "nl-NL", "EUR", 1.15, [("NL-NH", ["Amsterdam", "Haarlem"]), ("NL-ZH", ["Rotterdam"])]),
}

# ---------------------------------------------------------------- traffic
SOURCE_MIX = (("direct", 0.26), ("organic", 0.28), ("paid", 0.17), ("email", 0.10), ("social", 0.11),
              ("referral", 0.05), ("affiliate", 0.03))
PAID_CHANNELS = (("google", "cpc"), ("bing", "cpc"), ("meta", "paid_social"), ("google", "shopping"))
SOCIAL_CHANNELS = (("instagram", "social"), ("facebook", "social"), ("tiktok", "social"),
                   ("youtube", "video"), ("strava", "social"))
AFFILIATES = (("awin", "affiliate"), ("runrepeat", "affiliate"), ("outdoorgearlab", "affiliate"))
ORGANIC_REFERRERS = ("https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/",
                     "https://www.ecosia.org/")
REFERRAL_SITES = ("https://www.strava.com/", "https://www.reddit.com/r/running/", "https://www.runnersworld.com/",
                  "https://www.bikeradar.com/", "https://www.outdoorgearlab.com/")
SOCIAL_REFERRERS = {"instagram": "https://l.instagram.com/", "facebook": "https://m.facebook.com/",
                    "tiktok": "https://www.tiktok.com/", "youtube": "https://www.youtube.com/",
                    "strava": "https://www.strava.com/"}
#: Campaigns linked to a category (by name); others get the seasonal ones.
CATEGORY_CAMPAIGNS = {
    "running shoes": "summer_running", "running apparel": "summer_running", "socks": "summer_running",
    "trail shoes": "trail_season_2026", "hiking boots": "trail_season_2026", "backpacks": "trail_season_2026",
    "road bikes": "cycling_week", "mountain bikes": "cycling_week", "cycling helmets": "cycling_week",
    "cycling apparel": "cycling_week", "bike accessories": "cycling_week",
    "yoga": "yoga_essentials", "yoga apparel": "yoga_essentials",
    "camping tents": "camping_weekend", "sleeping bags": "camping_weekend", "camping stoves": "camping_weekend",
    "outdoor jackets": "winter_outdoor", "ski and snowboard": "winter_outdoor",
}
SEASONAL_CAMPAIGNS = ("black_friday_2026", "cyber_monday_2026", "new_arrivals_nov")
EMAIL_CAMPAIGNS = ("weekly_newsletter", "black_friday_2026", "abandoned_cart_reminder", "new_arrivals_nov",
                   "winback_30d")
CAMPAIGN_COUPONS = {"black_friday_2026": "BF2026", "cyber_monday_2026": "CYBER20", "summer_running": "RUN15",
                    "winback_30d": "COMEBACK15", "abandoned_cart_reminder": "FREESHIP"}


def _device_combos() -> list[tuple[tuple[str, str, str, int, int], float]]:
    """Every (device, os, browser, width, height) with its probability."""
    combos = []
    for device, share in DEVICE_MIX:
        for os_name, os_share, browsers, screens in DEVICE_PROFILES[device]:
            for browser, browser_share in browsers:
                for width, height in screens:
                    combos.append(((device, os_name, browser, width, height),
                                   share * os_share * browser_share / len(screens)))
    return combos


def _geo_combos() -> list[tuple[tuple[str, str, str, str, str], float]]:
    """Every (country, region, city, language, currency) with its probability."""
    combos = []
    for code, (share, language, currency, _, regions) in COUNTRIES.items():
        for region, cities in regions:
            for city in cities:
                combos.append(((code, region, city, language, currency), share / len(regions) / len(cities)))
    return combos


DEVICE_COMBOS = _device_combos()
#: Distinct acquisition contexts kept for sharing (bounded memory at the load scale).
_CONTEXT_CACHE = 20_000
GEO_COMBOS = _geo_combos()


@dataclasses.dataclass(slots=True)
class Shopper:
    index: int
    #: the id of the first events: the customer id for registered shoppers, else the visitor id.
    user_id: str
    customer_id: str  # "" for anonymous shoppers who never log in
    anonymous_id: str  # "" for shoppers registered from their first event
    #: index of the first visit made logged in, for shoppers who log in mid-history; -1 otherwise.
    login_session: int
    interest_cum: list[float]  # cumulative interest over categories (Dirichlet draw)
    top_categories: list[int]  # 1-3 main interests, strongest first
    primary_style: list[int]  # per category
    secondary_style: list[int]  # per category
    budget_factor: float  # multiplies category medians
    budget: float  # typical spend in the catalog currency (on the main interest)
    buyer: bool
    email_subscriber: bool
    n_sessions: int
    context: common_pb2.Context  # acquisition context (first visit)
    campaign: str  # UTM campaign of the first visit ("" if none)

    @property
    def registered(self) -> bool:
        return bool(self.customer_id)


def _pick(rng: np.random.Generator, items: tuple[tuple[str, float], ...] | list, size: int) -> np.ndarray:
    weights = np.array([w for _, w in items], dtype=np.float64)
    return rng.choice(len(items), size=size, p=weights / weights.sum())


def customer_id(index: int, width: int) -> str:
    return f"c{index:0{width}d}"


def visitor_id(index: int, width: int) -> str:
    return f"v{index:0{width}d}"


def id_width(n_shoppers: int) -> int:
    return max(6, len(str(max(n_shoppers - 1, 0))))


class ShopperFactory:
    """Vectorized, chunked generation of shoppers for one config and catalog."""

    def __init__(self, config: DemoConfig, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.n_cat = len(catalog.specs)
        self.width = id_width(config.n_shoppers)
        weights = np.array([s.weight for s in catalog.specs], dtype=np.float64)
        self.log_cat_weights = np.log(weights / weights.sum())
        comp = np.zeros((self.n_cat, self.n_cat))
        for c, others in enumerate(complement_indices(catalog.specs)):
            comp[c, others] = 1.0
        self.complement_matrix = comp
        self.medians = np.array([s.median_eur for s in catalog.specs]) * (
            5.5 if catalog.currency == "BRL" else 1.0)
        self.geo_budget = np.array([COUNTRIES[geo[0]][3] for geo, _ in GEO_COMBOS])
        self._contexts: dict[tuple, tuple[common_pb2.Context, str]] = {}

    def chunk(self, chunk_no: int) -> list[Shopper]:
        cfg = self.config
        lo = chunk_no * cfg.chunk_size
        hi = min(cfg.n_shoppers, lo + cfg.chunk_size)
        n = hi - lo
        if n <= 0:
            return []
        rng = np.random.default_rng([cfg.seed, 2, chunk_no])
        n_cat = self.n_cat

        # interests: a main category, then 0-2 more leaning to its complements; Dirichlet on them
        first = rng.choice(n_cat, size=n, p=np.exp(self.log_cat_weights))
        logits = self.log_cat_weights[None, :] + 1.5 * self.complement_matrix[first]
        logits = logits + rng.gumbel(size=(n, n_cat))
        logits[np.arange(n), first] = -np.inf
        others = np.argsort(-logits, axis=1)[:, :2]
        k = rng.choice(3, size=n, p=[0.4, 0.4, 0.2]) + 1
        alpha = np.full((n, n_cat), 0.02)
        alpha[np.arange(n), first] = 4.0
        alpha[np.arange(n), others[:, 0]] = np.where(k >= 2, 2.0, 0.02)
        alpha[np.arange(n), others[:, 1]] = np.where(k >= 3, 1.5, 0.02)
        interests = rng.gamma(alpha)
        interests /= interests.sum(axis=1, keepdims=True)
        interest_cum = np.cumsum(interests, axis=1)
        order = np.argsort(-interests, axis=1)

        n_sty = cfg.styles_per_category
        primary = rng.integers(0, n_sty, size=(n, n_cat))
        secondary = rng.integers(0, n_sty, size=(n, n_cat))

        geo = _pick(rng, GEO_COMBOS, n)
        budget_factor = np.exp(rng.normal(0.0, 0.45, size=n)) * self.geo_budget[geo]
        budget = self.medians[order[:, 0]] * budget_factor

        device = _pick(rng, DEVICE_COMBOS, n)
        source = _pick(rng, SOURCE_MIX, n)
        u_channel, u_campaign, u_ref = rng.random((3, n))

        registered_u = rng.random(n)
        registered = registered_u < cfg.registered_share
        login = (~registered) & (registered_u < cfg.registered_share + cfg.login_share)
        buyer = rng.random(n) < np.where(registered | login, min(1.0, cfg.buyer_share * 1.6),
                                         cfg.buyer_share * 0.8)
        email_source = source == [s for s, _ in SOURCE_MIX].index("email")
        email_sub = email_source | ((registered | login) & (rng.random(n) < 0.5))
        activity = rng.gamma(0.8, 1 / 0.8, size=n)
        extra = rng.poisson((cfg.sessions_mean - 1.0) * activity)
        n_sessions = 1 + extra + (login * 1)  # login shoppers need a visit before and after
        login_at = np.minimum(1 + (rng.random(n) * np.maximum(n_sessions - 1, 1)).astype(np.int64),
                              n_sessions - 1)

        shoppers = []
        cum_rows = interest_cum.tolist()
        top_rows = order[:, :3].tolist()
        primary_rows, secondary_rows = primary.tolist(), secondary.tolist()
        k_l, device_l, geo_l, source_l = k.tolist(), device.tolist(), geo.tolist(), source.tolist()
        u_channel_l, u_campaign_l, u_ref_l = u_channel.tolist(), u_campaign.tolist(), u_ref.tolist()
        factor_l, budget_l = budget_factor.tolist(), budget.tolist()
        registered_l, login_l = registered.tolist(), login.tolist()
        buyer_l, email_l = buyer.tolist(), email_sub.tolist()
        sessions_l, login_at_l = n_sessions.tolist(), login_at.tolist()
        width = self.width
        for j in range(n):
            index = lo + j
            top = top_rows[j][: k_l[j]]
            ctx, campaign = self._context(device_l[j], geo_l[j], source_l[j], u_channel_l[j], u_campaign_l[j],
                                          u_ref_l[j], top[0])
            if registered_l[j]:
                uid = cid = f"c{index:0{width}d}"
                aid, login_session = "", -1
            elif login_l[j]:
                uid = aid = f"v{index:0{width}d}"
                cid, login_session = f"c{index:0{width}d}", login_at_l[j]
            else:
                uid = aid = f"v{index:0{width}d}"
                cid, login_session = "", -1
            shoppers.append(Shopper(
                index=index, user_id=uid, customer_id=cid, anonymous_id=aid, login_session=login_session,
                interest_cum=cum_rows[j], top_categories=top,
                primary_style=primary_rows[j], secondary_style=secondary_rows[j],
                budget_factor=factor_l[j], budget=round(budget_l[j], 2),
                buyer=buyer_l[j], email_subscriber=email_l[j], n_sessions=sessions_l[j],
                context=ctx, campaign=campaign,
            ))
        return shoppers

    def _context(self, device: int, geo: int, source: int, u_channel: float, u_campaign: float,
                 u_ref: float, main_category: int) -> tuple[common_pb2.Context, str]:
        """The shopper's acquisition context; equal contexts are shared (never mutate them)."""
        traffic = self._traffic(SOURCE_MIX[source][0], u_channel, u_campaign, u_ref, main_category)
        key = (device, geo, traffic)
        cached = self._contexts.get(key)
        if cached is None:
            device_type, os_name, browser, width, height = DEVICE_COMBOS[device][0]
            code, region, city, language, currency = GEO_COMBOS[geo][0]
            source_name, referrer, utm = traffic
            ctx = common_pb2.Context(
                device_type=device_type, os=os_name, browser=browser, screen_width=width, screen_height=height,
                country=code, region=region, city=city, language=language, currency=currency,
                traffic_source=source_name, referrer=referrer,
            )
            if utm:
                ctx.utm.CopyFrom(common_pb2.Utm(source=utm[0], medium=utm[1], campaign=utm[2], term=utm[3],
                                                content=utm[4]))
            cached = (ctx, utm[2] if utm else "")
            if len(self._contexts) < _CONTEXT_CACHE:
                self._contexts[key] = cached
        return cached

    def _traffic(self, source: str, u_channel: float, u_campaign: float, u_ref: float,
                 main_category: int) -> tuple[str, str, tuple[str, str, str, str, str] | None]:
        """(traffic_source, referrer, utm (source, medium, campaign, term, content) or None)."""
        spec = self.catalog.specs[main_category]
        if source == "paid":
            src, medium = PAID_CHANNELS[int(u_channel * len(PAID_CHANNELS))]
            term = spec.queries[int(u_ref * len(spec.queries))]
            referrer = "https://www.google.com/" if src == "google" else f"https://www.{src}.com/"
            content = "ad_v2" if u_ref < 0.5 else "ad_v1"
            return source, referrer, (src, medium, _campaign_for(spec.name, u_campaign), term, content)
        if source == "email":
            campaign = EMAIL_CAMPAIGNS[int(u_campaign * len(EMAIL_CAMPAIGNS))]
            content = "hero_button" if u_ref < 0.6 else "product_grid"
            return source, "", ("newsletter", "email", campaign, "", content)
        if source == "social":
            src, medium = SOCIAL_CHANNELS[int(u_channel * len(SOCIAL_CHANNELS))]
            return source, SOCIAL_REFERRERS[src], (src, medium, _campaign_for(spec.name, u_campaign), "", "")
        if source == "affiliate":
            src, medium = AFFILIATES[int(u_channel * len(AFFILIATES))]
            return source, f"https://www.{src}.com/", (src, medium, "partner_program", "", "")
        if source == "organic":
            return source, ORGANIC_REFERRERS[int(u_ref * len(ORGANIC_REFERRERS))], None
        if source == "referral":
            return source, REFERRAL_SITES[int(u_ref * len(REFERRAL_SITES))], None
        return source, "", None


def _campaign_for(category: str, u: float) -> str:
    linked = CATEGORY_CAMPAIGNS.get(category)
    if linked and u < 0.6:
        return linked
    return SEASONAL_CAMPAIGNS[min(int((u if not linked else (u - 0.6) / 0.4) * len(SEASONAL_CAMPAIGNS)),
                                  len(SEASONAL_CAMPAIGNS) - 1)]


def iter_shoppers(config: DemoConfig, catalog: Catalog, shoppers: range | None = None) -> Iterator[Shopper]:
    """Shoppers 0..n_shoppers-1 (or those of `shoppers`, a step-1 range), generated chunk by chunk.

    Chunks are seeded independently, so a slice costs only the chunks it touches: parallel
    workers can each generate their own range of shoppers.
    """
    start, stop = 0, config.n_shoppers
    if shoppers is not None:
        if shoppers.step != 1:
            raise ValueError("shoppers must be a range with step 1")
        start, stop = max(shoppers.start, 0), min(shoppers.stop, config.n_shoppers)
    if start >= stop:
        return
    factory = ShopperFactory(config, catalog)
    size = config.chunk_size
    for chunk_no in range(start // size, math.ceil(stop / size)):
        chunk = factory.chunk(chunk_no)
        lo = chunk_no * size
        yield from chunk[max(start - lo, 0): stop - lo]
