"""Statistics of a generated demo store, without any server (`vitrine demo --dry-run`)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vitrine.demo.config import DemoConfig
from vitrine.demo.sessions import PRODUCT_VIEW, PURCHASE, HistoryGenerator
from vitrine.demo.shoppers import iter_shoppers
from vitrine.v1 import common_pb2


def catalog_stats(gen: HistoryGenerator) -> dict[str, Any]:
    catalog = gen.catalog
    per_category = {}
    for c, spec in enumerate(catalog.specs):
        prices = catalog.price[catalog.category == c]
        if len(prices) == 0:
            continue
        q = np.quantile(prices, [0.1, 0.5, 0.9])
        per_category[spec.name] = {"products": len(prices), "p10": round(float(q[0]), 2),
                                   "median": round(float(q[1]), 2), "p90": round(float(q[2]), 2)}
    return {
        "products": len(catalog),
        "categories": len(per_category),
        "currency": catalog.currency,
        "out_of_stock_share": round(float((catalog.stock == 0).mean()), 4),
        "price_by_category": per_category,
    }


def dataset_stats(config: DemoConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Counts per event type, mixes and catalog quantiles of the demo store of `config`."""
    gen = HistoryGenerator(config)
    types: collections.Counter[str] = collections.Counter()
    devices: collections.Counter[str] = collections.Counter()
    countries: collections.Counter[str] = collections.Counter()
    sources: collections.Counter[str] = collections.Counter()
    campaigns: collections.Counter[str] = collections.Counter()
    shoppers = registered = logins = buyers_seen = visits = orders = same_category = view_pairs = 0
    names = {v: k for k, v in common_pb2.EventType.items()}
    t0 = time.perf_counter()
    last = t0
    events = 0
    for shopper in iter_shoppers(gen.config, gen.catalog):
        history = gen.history(shopper)
        shoppers += 1
        registered += shopper.login_session < 0 and bool(shopper.customer_id)
        logins += history.identify is not None
        ctx = shopper.context
        devices[ctx.device_type] += 1
        countries[ctx.country] += 1
        sources[ctx.traffic_source] += 1
        if ctx.utm.campaign:
            campaigns[ctx.utm.campaign] += 1
        bought = False
        for visit in history.visits:
            visits += 1
            prev_cat = -1
            order_ids = set()
            for e in visit.events:
                types[names[e[0]]] += 1
                if e[0] == PRODUCT_VIEW:
                    if prev_cat >= 0:
                        view_pairs += 1
                        same_category += e[3] == prev_cat
                    prev_cat = e[3]
                elif e[0] == PURCHASE:
                    order_ids.add(e[6])
                    bought = True
            orders += len(order_ids)
            events += len(visit.events)
        buyers_seen += bought
        now = time.perf_counter()
        if progress and now - last >= 1.0:
            last = now
            progress(f"{shoppers:,}/{config.n_shoppers:,} shoppers, {events:,} events "
                     f"({events / (now - t0):,.0f} events/s)")
    seconds = time.perf_counter() - t0

    def mix(counter: collections.Counter[str]) -> dict[str, float]:
        total = sum(counter.values()) or 1
        return {k: round(v / total, 3) for k, v in counter.most_common()}

    return {
        "config": {"n_products": gen.config.n_products, "n_shoppers": gen.config.n_shoppers,
                   "seed": gen.config.seed, "days": gen.config.days, "now_ms": gen.config.end_ms,
                   "scale": gen.config.scale},
        "catalog": catalog_stats(gen),
        "shoppers": shoppers,
        "registered_from_start": registered,
        "logged_in_mid_history": logins,
        "anonymous": shoppers - registered - logins,
        "purchasers": buyers_seen,
        "visits": visits,
        "orders": orders,
        "events": events,
        "events_by_type": dict(types.most_common()),
        "device_mix": mix(devices),
        "country_mix": mix(countries),
        "source_mix": mix(sources),
        "utm_campaigns": dict(campaigns.most_common()),
        "consecutive_views_same_category": round(same_category / view_pairs, 3) if view_pairs else 0.0,
        "generation_seconds": round(seconds, 2),
        "events_per_second": round(events / seconds) if seconds else 0,
    }
