"""Prometheus metrics of the recommendation service's feeds and Rank (served by the service process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CATALOG_CHANGES = Counter("vitrine_recommendation_catalog_changes_total",
                          "stock and price changes logged for FollowCatalog")
CATALOG_FEED_ITEMS = Counter("vitrine_recommendation_catalog_feed_items_total", "changes sent on FollowCatalog streams")
CATALOG_FOLLOWERS = Gauge("vitrine_recommendation_catalog_followers", "FollowCatalog streams open")
RANK_UNKNOWN_PRODUCTS = Counter("vitrine_recommendation_rank_unknown_products_total",
                                "ids of Rank lists not in the catalog (dropped)")
SIGNAL_ERASURES = Counter("vitrine_recommendation_signal_erasures_total",
                          "erasures from the event feed applied to the signals")
