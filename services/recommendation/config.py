"""Configuration and every limit of the recommendation service (documented in README.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

from scoring.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_EF_SEARCH, DEFAULT_FLAT_MAX_ITEMS, DEFAULT_HNSW_M, IVF
from scoring.list_rank import ListWeights
from services.common.config import ServerConfig

SERVICE = "recommendation"
DEFAULT_PORT = 50054

# Request limits
MAX_K = 200
MAX_BATCH_REQUESTS = 32           # requests in one RecommendBatch (a page's placements)
MAX_RANK_IDS = 1_000              # products in one Rank list (and its largest k)
MAX_PRODUCT_ID_LENGTH = 256
MAX_EXCLUDE_IDS = 1_000
MAX_CART_IDS = 100
MAX_RECENT_IDS = 200
MAX_PURCHASED_IDS = 1_000
MAX_CATEGORY_FILTERS = 100
MAX_AFFINITY_ENTRIES = 1_000
# Catalog limits
MAX_TITLE_LENGTH = 1_000
MAX_TAGS = 100
MAX_ATTRIBUTES = 100
MAX_EMBEDDING_DIMENSIONS = 4_096
MIN_DIMENSIONS = 2
MAX_DIMENSIONS = 1_024
# Streams: rows per LMDB write transaction; errors kept in a summary
STREAM_BATCH = 1_000
MAX_SUMMARY_ERRORS = 100
# Train
MAX_TRAIN_SESSIONS = 5_000_000
MAX_SESSION_LENGTH = 1_000        # longer sessions keep their newest events
SCAN_TIMEOUT_SECONDS = 600.0      # deadline of one ScanEvents stream per profile shard
MODELS_KEPT = 3                   # model directories kept on disk (current included)
# Observe
MAX_OPEN_BASKETS = 100_000        # orders / sessions remembered for bought-together pairs
MAX_BASKET_ITEMS = 50             # items per order / session that pair up
SEEN_EVENT_IDS = 200_000          # recent event ids remembered to ignore repeats
CO_PURCHASE_WEIGHT = 1.0
CO_CART_WEIGHT = 0.5
VIEW_WEIGHT = 1.0
CART_WEIGHT = 3.0
PURCHASE_WEIGHT = 5.0
# Retrieval
RETRY_GROWTH = 4                  # when filters leave < k, retrieve this many times more
MAX_CANDIDATES = 20_000           # never retrieve more than this per request
TRENDING_POOL = 2_000             # trending items kept ranked for fallbacks
UPSELL_SCAN_MAX = 50_000          # up-sell scores a whole category up to this size, else uses the index
TOGETHER_SCORE_BASE = 1.0         # co-occurrence scores are 1 + w / max w: above any cosine
# Rank (first stage): weights of the caller's order, session neighbours, shopper-vector similarity and
# popularity (scoring.list_rank); an item counts as moved by the shopper ("based on your recent
# activity") with a session score or at least this cosine to the shopper vector
RANK_WEIGHTS = ListWeights(order=1.0, session=1.0, vector=0.5, popularity=0.25)
RANK_PERSONAL_MIN_SIMILARITY = 0.5
RANK_CATEGORY_WEIGHT = 0.3        # score += this x affinity / max affinity (FOR_YOU's 0.1 is too weak
#                                   against the caller's order, which spans 0..1)
# Trending
TRENDING_REFRESH_MS = 1_000       # large catalogs: trending may be this stale (refreshed in the background)
TRENDING_INLINE_MAX_ITEMS = 20_000   # up to this many products, a request re-ranks trending itself when a count
#                                     changed; above, the background-refreshed ranking (<= 1 s old) serves:
#                                     at 100k products the inline re-rank was the top CPU cost under load
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000  # event times further in the future than this count as now
CREATED_PRODUCT_STOCK = 1         # stock of products created by Train (create_missing_products)
LMDB_MAP_SIZE = 8 * 1024**3       # sparse file; the upper bound of the catalog store
# FollowCatalog
MAX_KEPT_CHANGES = 1_000_000      # catalog changes kept for followers (the oldest are pruned)
FOLLOW_READ_BATCH = 500           # changes read from LMDB per transaction while a follower catches up
FOLLOW_EVENTS_BATCH = 256         # FollowEvents items applied to the signals at once


def _f(default: Any, help_text: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class RecommendationConfig(ServerConfig):
    data_dir: str = _f("./data", "data directory; files go under <data_dir>/recommendation/")
    profile_addresses: str = _f("127.0.0.1:50052", "profile shards for Train from the event log, comma-separated")
    dimensions: int = _f(64, "item vector dimensions when Train does not say")
    flat_index_max_items: int = _f(DEFAULT_FLAT_MAX_ITEMS, "exact IndexFlatIP up to this many items, index_kind above")
    index_kind: str = _f(IVF, "index above flat_index_max_items: ivf (IndexIVFFlat) or hnsw (IndexHNSWFlat)")
    ivf_nlist: int = _f(0, "IVF inverted lists (0 = 4 x sqrt(items))")
    hnsw_m: int = _f(DEFAULT_HNSW_M, "HNSW graph degree M")
    hnsw_ef_construction: int = _f(DEFAULT_EF_CONSTRUCTION, "HNSW efConstruction")
    hnsw_ef_search: int = _f(DEFAULT_EF_SEARCH, "HNSW efSearch to start tuning from")
    target_recall: float = _f(0.97, "recall@10 vs exact search that nprobe / efSearch tuning must reach")
    candidate_multiplier: int = _f(10, "retrieve k x this many candidates before re-ranking")
    budget_tolerance: float = _f(1.5, "prices above budget x this are demoted")
    trending_half_life_hours: float = _f(24.0, "half-life of trending counts")
    snapshot_seconds: float = _f(60.0, "how often real-time signals are saved (0 = only at stop)")
    model_poll_seconds: float = _f(10.0, "how often models/current is checked; a new or rolled-back version "
                                   "is loaded and swapped in (0 = only at start)")
    max_message_mb: int = _f(64, "largest gRPC message, MiB (Train with inline sessions)")
    follow_events: bool = _f(True, "real-time signals follow every profile shard's FollowEvents feed "
                             "(profile_addresses); off: only Observe feeds them")
