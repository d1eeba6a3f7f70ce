"""Gateway metrics: fallbacks by reason, backend call latency, experiments and exposures."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.common.metrics import LATENCY_BUCKETS

FALLBACKS = Counter("vitrine_gateway_fallbacks_total", "Personalize answers degraded, by reason", ["reason"])
UNEXPECTED_ERRORS = Counter(
    "vitrine_gateway_unexpected_errors_total",
    "Backend calls that failed with neither a gRPC status nor a timeout (a bug on some side: the part "
    "fell back; logged once per backend and error type), by backend and error type", ["backend", "error"])
TRENDING_CATEGORY_ERRORS = Counter(
    "vitrine_gateway_trending_category_errors_total",
    "Background fetches of one category's trending list that failed (the global list serves; logged "
    "once per status), by status", ["code"])
BACKEND_LATENCY = Histogram(
    "vitrine_gateway_backend_seconds",
    "Backend calls made by Personalize, by backend and outcome (ok, error, timeout)",
    ["backend", "outcome"],
    buckets=LATENCY_BUCKETS,
)
TRENDING_REFRESHES = Counter("vitrine_gateway_trending_refresh_total",
                             "Background refreshes of the warm trending lists, by outcome", ["outcome"])
ALIAS_LOOKUPS = Counter("vitrine_gateway_alias_lookups_total",
                        "ResolveAlias calls of the shard router, by answer (alias, none)", ["answer"])
CROSS_SHARD_IDENTIFY = Counter("vitrine_gateway_cross_shard_identify_total",
                               "Identify calls that moved a profile between shards")
EXPOSURES = Counter("vitrine_gateway_exposures_total",
                    "Exposure events (one per answer that served a variant), by outcome (offered, written, "
                    "duplicate, dropped_full, failed, rejected)", ["outcome"])
ASSIGNMENTS_SERVED = Counter("vitrine_gateway_assignments_served_total",
                             "Placements served under an experiment's variant")
ASSIGNMENTS_UNSERVED = Counter("vitrine_gateway_assignments_unserved_total",
                               "Assignments not served, by reason (slot_not_held: an experiment the gateway "
                               "did not know yet; not_on_page; ranked_placement; no_user_id)", ["reason"])
