"""The demo catalog: a sports and outdoor shop with realistic categories and prices.

Every category has a log-normal price scale (median and sigma), brands, product types,
style sub-clusters, tags, a search vocabulary and complementary categories (what is
bought together). Products are generated with vectorized NumPy into a `Catalog` of
columns; `generate_products` turns them into `vitrine.v1.common_pb2.Product` one at a
time. Each product belongs to a latent style sub-cluster of its category and has a
popularity weight, so shoppers who prefer a style co-view related items: the
structure a recommender can learn.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import math
from collections.abc import Iterator

import numpy as np

from vitrine.v1 import common_pb2

#: BRL prices are EUR prices times this (rounded again to .99).
BRL_PER_EUR = 5.5


@dataclasses.dataclass(frozen=True)
class CategorySpec:
    name: str
    median_eur: float  # median price: exp(mu)
    sigma: float  # log-normal sigma
    weight: float  # share of the catalog (relative)
    brands: tuple[str, ...]
    nouns: tuple[str, ...]  # product types, used in titles
    styles: tuple[str, ...]  # style sub-clusters
    tags: tuple[str, ...]
    queries: tuple[str, ...]  # search vocabulary
    complements: tuple[str, ...]  # categories bought together with this one

    @property
    def mu(self) -> float:
        return math.log(self.median_eur)


def _c(name: str, median: float, sigma: float, weight: float, brands: str, nouns: str, styles: str,
       tags: str, queries: str, complements: str) -> CategorySpec:
    def split(text: str) -> tuple[str, ...]:
        return tuple(s.strip() for s in text.split("|") if s.strip())

    return CategorySpec(name, median, sigma, weight, split(brands), split(nouns), split(styles), split(tags),
                        split(queries), split(complements))


CATEGORIES: tuple[CategorySpec, ...] = (
    _c("running shoes", 115, 0.30, 1.6,
       "Nike|Adidas|Asics|Brooks|Hoka|Saucony|New Balance|Mizuno|On",
       "Road Running Shoe|Cushioned Trainer|Racing Shoe|Daily Trainer",
       "Neutral|Stability|Carbon Plate|Max Cushion|Lightweight|Wide Fit|Tempo|Recovery",
       "running|road|shoes",
       "running shoes|road running shoes|marathon shoes|cushioned running shoes|carbon plate shoes|"
       "stability running shoes|running sneakers",
       "running apparel|socks|sports nutrition|hydration|gps watches"),
    _c("trail shoes", 135, 0.28, 1.0,
       "Salomon|Hoka|La Sportiva|Merrell|Altra|Inov-8|Saucony",
       "Trail Running Shoe|Mountain Runner|Trail Trainer",
       "Grip|Waterproof|Ultra|Technical|Light Trail|Mud|Rocky Terrain|Cushioned Trail",
       "running|trail|shoes|outdoor",
       "trail running shoes|trail shoes|waterproof trail shoes|ultra trail shoes|mountain running shoes",
       "running apparel|socks|hydration|backpacks|gps watches"),
    _c("running apparel", 42, 0.45, 1.4,
       "Nike|Adidas|Under Armour|Asics|Salomon|Brooks|Odlo",
       "Running Shirt|Running Shorts|Running Tights|Running Jacket|Singlet|Half-Zip Top",
       "Breathable|Thermal|Reflective|Seamless|Windproof|Compression|Ultralight|Merino",
       "running|apparel|clothing",
       "running shirt|running shorts|running tights|running jacket|reflective running vest",
       "running shoes|socks|hydration"),
    _c("socks", 14, 0.35, 0.8,
       "Falke|Balega|Stance|Darn Tough|Injinji|Smartwool",
       "Running Socks|Hiking Socks|Cycling Socks|Compression Socks|Trail Socks",
       "Cushioned|Ankle|Crew|Merino|No-Show|Toe|Compression|Thin",
       "socks|accessories",
       "running socks|hiking socks|merino socks|compression socks|toe socks",
       "running shoes|trail shoes|hiking boots"),
    _c("yoga", 38, 0.55, 1.0,
       "Manduka|Lululemon|Gaiam|Liforme|Jade|Hugger Mugger",
       "Yoga Mat|Yoga Block|Yoga Strap|Meditation Cushion|Yoga Bolster",
       "Eco|Travel|Extra Thick|Non-Slip|Natural Rubber|Cork|Hot Yoga|Alignment",
       "yoga|studio|wellness",
       "yoga mat|non slip yoga mat|yoga block|cork yoga mat|travel yoga mat|meditation cushion",
       "yoga apparel|water bottles|fitness equipment"),
    _c("yoga apparel", 55, 0.40, 1.0,
       "Lululemon|Alo|Varley|Sweaty Betty|Girlfriend Collective|Nike",
       "Yoga Leggings|Sports Bra|Yoga Top|Wrap|Yoga Pants",
       "High-Rise|Seamless|Recycled|Soft Touch|Sculpt|Relaxed|Ribbed|Flow",
       "yoga|apparel|clothing",
       "yoga leggings|high waisted leggings|sports bra|yoga pants|seamless leggings",
       "yoga|water bottles"),
    _c("road bikes", 1450, 0.50, 0.6,
       "Trek|Specialized|Canyon|Giant|Cannondale|Cervelo|Orbea|Scott",
       "Road Bike|Gravel Bike|Endurance Bike|Aero Bike",
       "Carbon|Aluminium|Disc|Race|Endurance|Gravel|Electric|Entry",
       "cycling|bike|road",
       "road bike|gravel bike|carbon road bike|endurance bike|aero bike|e-road bike",
       "cycling helmets|cycling apparel|bike accessories|gps watches"),
    _c("mountain bikes", 1650, 0.50, 0.5,
       "Trek|Specialized|Santa Cruz|Giant|YT|Canyon|Cube|Scott",
       "Mountain Bike|Trail Bike|Enduro Bike|Cross-Country Bike|E-MTB",
       "Hardtail|Full Suspension|Enduro|XC|Downhill|Electric|Trail|Kids",
       "cycling|bike|mtb|outdoor",
       "mountain bike|full suspension bike|hardtail|e-mtb|enduro bike|trail bike",
       "cycling helmets|cycling apparel|bike accessories|hydration"),
    _c("cycling helmets", 95, 0.45, 0.7,
       "Giro|POC|Bell|Kask|Specialized|Lazer|Abus",
       "Road Helmet|MTB Helmet|Commuter Helmet|Aero Helmet",
       "MIPS|Aero|Ventilated|Lightweight|Urban|Full Face|Kids|LED",
       "cycling|helmet|safety",
       "bike helmet|mips helmet|road helmet|mtb helmet|aero helmet",
       "road bikes|mountain bikes|cycling apparel|bike accessories"),
    _c("cycling apparel", 70, 0.45, 1.0,
       "Rapha|Castelli|Assos|Gore Wear|Endura|Sportful|Pearl Izumi",
       "Cycling Jersey|Bib Shorts|Cycling Jacket|Gloves|Overshoes|Gilet",
       "Race Fit|Thermal|Rain|Summer|Winter|Gravel|Pro|Club",
       "cycling|apparel|clothing",
       "cycling jersey|bib shorts|cycling jacket|cycling gloves|winter cycling jacket",
       "cycling helmets|bike accessories|socks"),
    _c("bike accessories", 32, 0.80, 1.2,
       "Topeak|Lezyne|Shimano|Wahoo|Garmin|Continental|Schwalbe|Crankbrothers",
       "Bike Light|Mini Pump|Multi-Tool|Tyre|Pedals|Bottle Cage|Bike Lock|Saddle Bag|Smart Trainer",
       "Road|MTB|Commuter|Tubeless|Clipless|USB-C|Carbon|Workshop",
       "cycling|accessories|parts",
       "bike light|bike pump|tubeless tyre|clipless pedals|bike lock|smart trainer|multi tool",
       "road bikes|mountain bikes|cycling helmets|hydration"),
    _c("camping tents", 260, 0.60, 0.8,
       "MSR|Big Agnes|Nemo|The North Face|Vaude|Coleman|Vango|Robens",
       "Tent|Backpacking Tent|Family Tent|Tarp|Bivy",
       "Ultralight|2-Person|4-Season|Family|Festival|Inflatable|Freestanding|Tunnel",
       "camping|tent|outdoor",
       "tent|ultralight tent|2 person tent|family tent|backpacking tent|4 season tent",
       "sleeping bags|camping stoves|backpacks|outdoor jackets"),
    _c("sleeping bags", 150, 0.50, 0.7,
       "Rab|Mountain Hardwear|Sea to Summit|Therm-a-Rest|Marmot|Deuter",
       "Sleeping Bag|Sleeping Mat|Sleeping Bag Liner|Camping Pillow",
       "Down|Synthetic|3-Season|Winter|Summer|Ultralight|Mummy|Rectangular",
       "camping|sleep|outdoor",
       "sleeping bag|down sleeping bag|sleeping mat|winter sleeping bag|ultralight sleeping bag",
       "camping tents|camping stoves|backpacks"),
    _c("camping stoves", 58, 0.60, 0.7,
       "Jetboil|MSR|Primus|GSI Outdoors|Sea to Summit|Optimus|Trangia",
       "Stove|Cook Set|Pot|Mug|Camp Kettle|Gas Canister|Spork",
       "Backpacking|Titanium|Group|Compact|Multi-Fuel|Integrated|Ultralight|Family",
       "camping|cooking|outdoor",
       "camping stove|jetboil|titanium pot|cook set|gas canister|camp kettle",
       "camping tents|sleeping bags|hydration"),
    _c("hiking boots", 165, 0.30, 1.0,
       "Salomon|Merrell|Lowa|Meindl|Scarpa|Hanwag|Keen|La Sportiva",
       "Hiking Boot|Trekking Boot|Approach Shoe|Hiking Shoe",
       "Gore-Tex|Leather|Lightweight|Mid|Low|Mountaineering|Vegan|Wide",
       "hiking|boots|outdoor",
       "hiking boots|waterproof hiking boots|gore tex boots|trekking boots|leather hiking boots",
       "socks|backpacks|outdoor jackets"),
    _c("backpacks", 110, 0.55, 1.0,
       "Osprey|Deuter|Gregory|Fjallraven|Mystery Ranch|Salomon|Black Diamond",
       "Hiking Backpack|Daypack|Trekking Pack|Running Vest|Travel Pack|Hydration Pack",
       "20L|30L|45L|65L|Ultralight|Commuter|Women's Fit|Rolltop",
       "hiking|bags|outdoor",
       "hiking backpack|daypack|trekking backpack|running vest|hydration pack|65l backpack",
       "hiking boots|camping tents|hydration|outdoor jackets"),
    _c("outdoor jackets", 210, 0.50, 1.1,
       "Patagonia|Arc'teryx|The North Face|Columbia|Jack Wolfskin|Mammut|Rab|Fjallraven",
       "Rain Jacket|Down Jacket|Softshell|Fleece|Insulated Jacket|Hardshell",
       "Gore-Tex|Packable|Down|Recycled|Insulated|Windproof|Alpine|Urban",
       "outdoor|apparel|jackets",
       "rain jacket|down jacket|gore tex jacket|fleece jacket|softshell jacket|packable jacket",
       "hiking boots|backpacks|socks"),
    _c("swimming", 29, 0.60, 0.8,
       "Speedo|Arena|TYR|Zoggs|Huub|Orca",
       "Swimsuit|Swim Goggles|Swim Cap|Wetsuit|Kickboard|Jammer",
       "Competition|Training|Open Water|Chlorine Resistant|Kids|Triathlon|Mirrored|Fitness",
       "swimming|pool|water",
       "swim goggles|swimsuit|wetsuit|swim cap|open water goggles|triathlon wetsuit",
       "water bottles|sports nutrition"),
    _c("fitness equipment", 75, 0.90, 1.0,
       "Bowflex|Rogue|Domyos|Reebok|TRX|Concept2|Theragun",
       "Dumbbells|Kettlebell|Resistance Bands|Pull-Up Bar|Rowing Machine|Foam Roller|Massage Gun|Bench",
       "Adjustable|Home Gym|Compact|Cast Iron|Rubber|Pro|Recovery|Starter",
       "fitness|gym|training",
       "dumbbells|kettlebell|resistance bands|rowing machine|foam roller|massage gun|pull up bar",
       "yoga|sports nutrition|water bottles"),
    _c("sports nutrition", 24, 0.40, 1.0,
       "Maurten|SiS|Clif|GU|Optimum Nutrition|High5|Precision Fuel",
       "Energy Gel|Energy Bar|Protein Powder|Electrolyte Tabs|Drink Mix|Recovery Shake",
       "Caffeine|Vegan|High Carb|Whey|Plant Protein|Isotonic|Salted|Chocolate",
       "nutrition|fuel|energy",
       "energy gels|protein powder|electrolytes|energy bars|vegan protein|isotonic drink",
       "running shoes|water bottles|road bikes"),
    _c("gps watches", 310, 0.45, 0.7,
       "Garmin|Polar|Coros|Suunto|Wahoo|Amazfit",
       "GPS Watch|Heart Rate Monitor|Bike Computer|Fitness Tracker",
       "Running|Multisport|Solar|AMOLED|Outdoor|Triathlon|Entry|Premium",
       "electronics|training|gps",
       "gps watch|running watch|garmin forerunner|heart rate monitor|bike computer|multisport watch",
       "running shoes|bike accessories|running apparel"),
    _c("tennis", 85, 0.70, 0.8,
       "Wilson|Babolat|Head|Yonex|Tecnifibre|Prince",
       "Tennis Racket|Tennis Balls|Tennis Shoes|Racket Bag|Strings|Overgrip",
       "Power|Control|Spin|Junior|Clay Court|All Court|Lightweight|Tour",
       "tennis|racket|court",
       "tennis racket|tennis balls|tennis shoes|racket bag|padel racket|tennis strings",
       "water bottles|socks"),
    _c("football", 55, 0.70, 0.9,
       "Nike|Adidas|Puma|Umbro|Mizuno|Select",
       "Football Boots|Football|Goalkeeper Gloves|Shin Guards|Training Top|Jersey",
       "Firm Ground|Artificial Grass|Indoor|Elite|Academy|Kids|Match|Training",
       "football|soccer|team",
       "football boots|soccer ball|goalkeeper gloves|shin guards|firm ground boots|football jersey",
       "socks|water bottles"),
    _c("climbing", 78, 0.60, 0.7,
       "Black Diamond|Petzl|La Sportiva|Scarpa|Mammut|Edelrid|Ocun",
       "Climbing Shoes|Harness|Chalk Bag|Carabiner|Rope|Belay Device|Crash Pad",
       "Bouldering|Sport|Trad|Indoor|Alpine|Beginner|Aggressive|Comfort",
       "climbing|bouldering|outdoor",
       "climbing shoes|climbing harness|chalk bag|climbing rope|bouldering shoes|crash pad",
       "backpacks|outdoor jackets"),
    _c("ski and snowboard", 340, 0.60, 0.7,
       "Rossignol|Salomon|Atomic|Burton|Head|K2|Volkl",
       "Skis|Ski Boots|Snowboard|Ski Goggles|Ski Helmet|Ski Poles",
       "All-Mountain|Freeride|Piste|Park|Touring|Powder|Beginner|Race",
       "ski|snow|winter",
       "skis|ski boots|snowboard|ski goggles|ski helmet|touring skis",
       "outdoor jackets|socks|backpacks"),
    _c("hydration", 22, 0.45, 0.9,
       "Hydro Flask|CamelBak|Nalgene|Salomon|Stanley|Klean Kanteen",
       "Water Bottle|Soft Flask|Hydration Bladder|Insulated Bottle|Filter Bottle",
       "Insulated|Soft|Squeeze|Wide Mouth|Ultralight|Steel|BPA-Free|Filter",
       "hydration|bottles|accessories",
       "water bottle|insulated bottle|soft flask|hydration bladder|filter bottle",
       "running shoes|backpacks|road bikes"),
    _c("water bottles", 18, 0.35, 0.5,
       "Elite|Tacx|Zefal|CamelBak|Polar Bottle",
       "Bike Bottle|Gym Bottle|Shaker",
       "Insulated|Clear|Big|Small|Team|Logo|Eco|Bio",
       "bottles|accessories",
       "bike bottle|gym bottle|shaker bottle",
       "fitness equipment|yoga|sports nutrition"),
)

#: Title colours, also an attribute.
COLORS = ("Black", "White", "Navy", "Red", "Blue", "Green", "Grey", "Orange", "Olive", "Pink", "Yellow",
          "Purple", "Sand", "Teal")
_SYLLABLES = ("ae", "ro", "vo", "ka", "li", "zen", "ta", "nova", "tri", "ul", "mo", "sa", "fle", "ion", "ga",
              "pe", "ri", "ox", "ven", "tor")
_EXTRA_TAGS = ("new", "bestseller", "eco", "sale", "limited")


def categories(n: int = 0) -> tuple[CategorySpec, ...]:
    """The first `n` categories (all of them for 0)."""
    if n < 0 or n > len(CATEGORIES):
        raise ValueError(f"n_categories must be 0..{len(CATEGORIES)}")
    return CATEGORIES[: n or len(CATEGORIES)]


def product_id(index: int, n_products: int) -> str:
    return f"p{index:0{max(6, len(str(max(n_products - 1, 0))))}d}"


def round_price(values: np.ndarray) -> np.ndarray:
    """Shop prices: whole units minus one cent (x.99), at least 0.99."""
    return np.maximum(np.round(values), 1.0) - 0.01


@dataclasses.dataclass
class Catalog:
    """The catalog as columns (index = product number) plus per-(category, style) sampling tables."""

    seed: int
    currency: str
    specs: tuple[CategorySpec, ...]
    styles_per_category: int
    ids: list[str]
    category: np.ndarray  # int16 category index
    style: np.ndarray  # int16 style index within the category
    price: np.ndarray  # float64, x.99, catalog currency
    stock: np.ndarray  # int32
    popularity: np.ndarray  # float64 relative weight within (category, style)
    brand: np.ndarray  # int16 index into specs[c].brands
    noun: np.ndarray  # int16 index into specs[c].nouns
    color: np.ndarray  # int16 index into COLORS
    model: np.ndarray  # int32 model-name code
    extra_tag: np.ndarray  # int8 -1 or index into _EXTRA_TAGS
    # per (category, style): product numbers, cumulative popularity (Python lists for bisect)
    members: list[list[list[int]]] = dataclasses.field(default_factory=list)
    cum_weights: list[list[list[float]]] = dataclasses.field(default_factory=list)
    prices: list[float] = dataclasses.field(default_factory=list)  # Python floats for hot loops

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def category_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def pick(self, rnd_value: float, category: int, style: int) -> int:
        """A product of (category, style) drawn by popularity; `rnd_value` uniform in [0, 1)."""
        members = self.members[category][style]
        if not members:  # tiny catalogs: fall back to any style of the category, then anything
            for other in self.members[category]:
                if other:
                    return other[int(rnd_value * len(other))]
            return int(rnd_value * len(self.ids))
        cum = self.cum_weights[category][style]
        return members[min(bisect.bisect_right(cum, rnd_value * cum[-1]), len(members) - 1)]

    def title(self, i: int) -> str:
        spec = self.specs[self.category[i]]
        return (f"{spec.brands[self.brand[i]]} {self.model_name(i)} "
                f"{spec.styles[self.style[i] % len(spec.styles)]} {spec.nouns[self.noun[i]]} - "
                f"{COLORS[self.color[i]]}")

    def model_name(self, i: int) -> str:
        code = int(self.model[i])
        a = _SYLLABLES[code % 20]
        b = _SYLLABLES[(code // 20) % 20]
        number = (code // 400) % 12 + 1
        return f"{(a + b).capitalize()} {number}"

    def style_label(self, i: int) -> str:
        spec = self.specs[self.category[i]]
        return spec.styles[self.style[i] % len(spec.styles)]

    def product(self, i: int) -> common_pb2.Product:
        spec = self.specs[self.category[i]]
        style = self.style_label(i)
        tags = [*spec.tags, style.lower()]
        if self.extra_tag[i] >= 0:
            tags.append(_EXTRA_TAGS[self.extra_tag[i]])
        return common_pb2.Product(
            product_id=self.ids[i],
            title=self.title(i),
            category=spec.name,
            brand=spec.brands[self.brand[i]],
            price=self.prices[i],
            currency=self.currency,
            stock=int(self.stock[i]),
            tags=tags,
            attributes={"style": style, "color": COLORS[self.color[i]],
                        "type": spec.nouns[self.noun[i]]},
        )


@functools.lru_cache(maxsize=4)
def build_catalog(n_products: int, seed: int, currency: str = "EUR", n_categories: int = 0,
                  styles_per_category: int = 8, out_of_stock_share: float = 0.08) -> Catalog:
    """All products as NumPy columns, vectorized and deterministic in its arguments."""
    specs = categories(n_categories)
    n_cat, n_sty = len(specs), styles_per_category
    rng = np.random.default_rng([seed, 1])
    weights = np.array([s.weight for s in specs])
    category = rng.choice(n_cat, size=n_products, p=weights / weights.sum()).astype(np.int16)
    # every category gets at least one product when the catalog is big enough
    if n_products >= n_cat:
        category[:n_cat] = np.arange(n_cat, dtype=np.int16)
    style = rng.integers(0, n_sty, size=n_products).astype(np.int16)
    # a style shifts the price level of its sub-cluster (budget vs premium lines)
    style_shift = rng.normal(0.0, 0.25, size=(n_cat, n_sty))
    mu = np.array([s.mu for s in specs])[category]
    sigma = np.array([s.sigma for s in specs])[category]
    log_price = mu + style_shift[category, style] + sigma * rng.standard_normal(n_products)
    raw = np.exp(log_price) * (BRL_PER_EUR if currency == "BRL" else 1.0)
    price = round_price(raw)
    stock = rng.geometric(1 / 25, size=n_products).astype(np.int32)
    stock[rng.random(n_products) < out_of_stock_share] = 0
    popularity = rng.lognormal(0.0, 1.0, size=n_products)
    n_brands = np.array([len(s.brands) for s in specs])[category]
    n_nouns = np.array([len(s.nouns) for s in specs])[category]
    # a style leans towards some brands: brand = (style-preferred brand or random)
    preferred_brand = rng.integers(0, 1 << 16, size=(n_cat, n_sty))[category, style] % n_brands
    random_brand = rng.integers(0, 1 << 16, size=n_products) % n_brands
    brand = np.where(rng.random(n_products) < 0.5, preferred_brand, random_brand).astype(np.int16)
    noun = (rng.integers(0, 1 << 16, size=n_products) % n_nouns).astype(np.int16)
    color = rng.integers(0, len(COLORS), size=n_products).astype(np.int16)
    model = rng.integers(0, 20 * 20 * 12, size=n_products).astype(np.int32)
    extra = rng.integers(0, len(_EXTRA_TAGS), size=n_products).astype(np.int8)
    extra[rng.random(n_products) < 0.7] = -1

    catalog = Catalog(
        seed=seed, currency=currency, specs=specs, styles_per_category=n_sty,
        ids=[product_id(i, n_products) for i in range(n_products)],
        category=category, style=style, price=price, stock=stock, popularity=popularity,
        brand=brand, noun=noun, color=color, model=model, extra_tag=extra,
    )
    catalog.prices = price.tolist()
    order = np.lexsort((np.arange(n_products), style, category))
    keys = category[order].astype(np.int64) * n_sty + style[order]
    bounds = np.searchsorted(keys, np.arange(n_cat * n_sty + 1))
    for c in range(n_cat):
        members_c, cum_c = [], []
        for s in range(n_sty):
            k = c * n_sty + s
            idx = order[bounds[k]: bounds[k + 1]]
            members_c.append(idx.tolist())
            cum_c.append(np.cumsum(popularity[idx]).tolist())
        catalog.members.append(members_c)
        catalog.cum_weights.append(cum_c)
    return catalog


def generate_products(n: int, seed: int, *, currency: str = "EUR", n_categories: int = 0,
                      styles_per_category: int = 8) -> Iterator[common_pb2.Product]:
    """The catalog's products as protobuf `Product`s, ids p000000, p000001, ..."""
    catalog = build_catalog(n, seed, currency, n_categories, styles_per_category)
    return (catalog.product(i) for i in range(n))


def iter_product_batches(catalog: Catalog, batch_size: int = 1_000) -> Iterator[list[common_pb2.Product]]:
    """Products in lists of at most `batch_size`, for streaming uploads."""
    it = (catalog.product(i) for i in range(len(catalog)))
    while batch := list(itertools.islice(it, batch_size)):
        yield batch


def complement_indices(specs: tuple[CategorySpec, ...]) -> list[list[int]]:
    """For each category, the indices of its complementary categories present in `specs`."""
    index = {s.name: i for i, s in enumerate(specs)}
    return [[index[name] for name in s.complements if name in index] for s in specs]
