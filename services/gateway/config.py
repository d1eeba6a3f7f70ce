"""Gateway settings and every limit of the gateway as a named constant."""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig

DEFAULT_PORT = 50051

# Request limits (INVALID_ARGUMENT beyond them).
MAX_PLACEMENTS = 16              # placements per Personalize request
MAX_K = 100                      # items per placement
DEFAULT_K = 8                    # k when a placement names none
MAX_ID_LENGTH = 256              # user, session, product and slot ids
MAX_CART_ITEMS = 200             # cart_product_ids per request
MAX_DEADLINE_MS = 10_000         # largest deadline a caller may ask for
MIN_DEADLINE_MS = 1

# Deadline split: the profile read gets this share of the request budget; the
# segment and recommend calls run concurrently in what is left, minus a small
# reserve for assembling and sending the answer.
PROFILE_BUDGET_SHARE = 0.4
ASSEMBLY_RESERVE_MS = 1.5

# Profile calls other than Personalize's read (Track, Identify, ...): their own timeout.
PROFILE_CALL_TIMEOUT_S = 5.0
# Cross-shard Identify moves at most this many events of the anonymous profile.
MAX_MOVED_EVENTS = 100_000

# TrackBatch: at most this many events a request (as the profile service's TrackBatch), split by
# shard; at most this many error strings in the merged summary (as the profile service's).
MAX_BATCH_EVENTS = 1_000
MAX_SUMMARY_ERRORS = 100
# Alias lookups a sharded TrackBatch runs at once (one per distinct user id not in the cache).
BATCH_RESOLVE_CONCURRENCY = 32

# UserSignals built from the profile.
MAX_SIGNAL_RECENT = 50           # recently viewed ids passed to Recommend
MAX_SIGNAL_PURCHASED = 100
MAX_SIGNAL_AFFINITIES = 50       # strongest categories only

# Warm fallback lists (trending), refreshed in the background.
TRENDING_SIZE = 100              # items kept per list (placements take their k after filtering)
TRENDING_CATEGORY_LISTS = 256    # per-category lists kept (LRU)
TRENDING_CALL_TIMEOUT_S = 2.0
# While the global list is still empty (a gateway started before the catalog or the trending signals)
# it is refreshed this often instead of every trending_refresh_seconds: the fallback must not stay
# empty for a whole refresh period.
TRENDING_EMPTY_REFRESH_S = 1.0

# Alias cache of the shard router (anonymous id -> customer id after a cross-shard Identify).
ALIAS_CACHE_SIZE = 100_000
# "Not an alias" answers are trusted this long (another gateway replica may Identify meanwhile).
ALIAS_NEGATIVE_TTL_S = 2.0

# Placements go to Recommend in one RecommendBatch call; a recommendation service without it
# (UNIMPLEMENTED, e.g. an older replica during a rollout) gets one Recommend per placement, and
# the batch is tried again after this long.
RECOMMEND_BATCH_RETRY_S = 60.0

# Placements given by the caller's own list (candidate_product_ids) are ordered by Rank.
MAX_CANDIDATES = 1_000           # candidate_product_ids per placement

# Experiments. The slot ids that running experiments hold are refreshed this often (a placement
# in one of them waits for Evaluate's assignment before its items are asked for).
EXPERIMENT_REFRESH_S = 10.0
EXPERIMENT_CALL_TIMEOUT_S = 2.0
# When a placement waits for the assignment, Evaluate gets this share of what is left of the
# budget after the profile read; the placement's Recommend gets the rest.
EVALUATE_SHARE_WHEN_HELD = 0.5
# Exposure events (one per Personalize answer that served a variant) go to the profile log
# through TrackBatch, off the request path: a bounded FIFO queue drained by one writer.
EXPOSURE_QUEUE_SIZE = 20_000     # beyond this an exposure is dropped (counted; see README)
EXPOSURE_BATCH_SIZE = 500        # events per TrackBatch
EXPOSURE_LINGER_S = 0.05         # after the first event of a batch, wait this long for more
EXPOSURE_CALL_TIMEOUT_S = 5.0
EXPOSURE_ATTEMPTS = 4            # a batch not acknowledged is resent (idempotent) up to this many times
EXPOSURE_RETRY_PAUSE_S = 0.5     # times the attempt number
EXPOSURE_FLUSH_S = 5.0           # on shutdown, time given to write what is queued

PAGE_TYPES = ("home", "product", "category", "cart", "checkout", "search")


@dataclasses.dataclass(frozen=True)
class GatewayConfig(ServerConfig):
    profile_addresses: str = dataclasses.field(
        default="127.0.0.1:50052",
        metadata={"help": "profile shards, comma-separated host:port in shard order (the shard count is fixed "
                          "by this list: changing it moves users)"},
    )
    segmentation_address: str = dataclasses.field(default="127.0.0.1:50053",
                                                  metadata={"help": "segmentation service host:port"})
    recommendation_address: str = dataclasses.field(default="127.0.0.1:50054",
                                                    metadata={"help": "recommendation service host:port"})
    deadline_ms: int = dataclasses.field(
        default=50, metadata={"help": "Personalize budget per request when the request names none, ms"})
    trending_refresh_seconds: float = dataclasses.field(
        default=10.0, metadata={"help": "how often the warm trending fallback lists are refreshed"})
    backend_tls: bool = dataclasses.field(default=False, metadata={"help": "TLS to the backends"})
    processes: int = dataclasses.field(
        default=1, metadata={"help": "server processes sharing the port with SO_REUSEPORT (1 = one process)"})
    uvloop: bool = dataclasses.field(default=True, metadata={"help": "run on uvloop (off: the stock asyncio loop)"})
    reuse_port: bool = dataclasses.field(
        default=False, metadata={"help": "set SO_REUSEPORT on the listening socket (implied by --processes > 1)"})

    event_log: str = dataclasses.field(
        default="", metadata={"help": "the profile shards' event log (nats://...: scale-out mode, where a shopper "
                                      "is routed to the shard owning their stream partition)"})
    event_log_partitions: int = dataclasses.field(
        default=16, metadata={"help": "scale-out: partitions of the event stream (as the profile shards)"})

    @property
    def profile_shards(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.profile_addresses.split(",") if a.strip())
