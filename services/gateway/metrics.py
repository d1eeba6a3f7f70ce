"""Gateway metrics: fallbacks by reason, backend call latency, Observe forwarding."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.common.metrics import LATENCY_BUCKETS

FALLBACKS = Counter("vitrine_gateway_fallbacks_total", "Personalize answers degraded, by reason", ["reason"])
BACKEND_LATENCY = Histogram(
    "vitrine_gateway_backend_seconds",
    "Backend calls made by Personalize, by backend and outcome (ok, error, timeout)",
    ["backend", "outcome"],
    buckets=LATENCY_BUCKETS,
)
OBSERVE_FORWARDED = Counter("vitrine_gateway_observe_events_total",
                            "Events forwarded to Observe, by outcome (sent, dropped_full, failed)", ["outcome"])
TRENDING_REFRESHES = Counter("vitrine_gateway_trending_refresh_total",
                             "Background refreshes of the warm trending lists, by outcome", ["outcome"])
ALIAS_LOOKUPS = Counter("vitrine_gateway_alias_lookups_total",
                        "ResolveAlias calls of the shard router, by answer (alias, none)", ["answer"])
CROSS_SHARD_IDENTIFY = Counter("vitrine_gateway_cross_shard_identify_total",
                               "Identify calls that moved a profile between shards")
