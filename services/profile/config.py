"""Configuration and every limit of the profile service.

Flags are `--field-name`; the environment `VITRINE_PROFILE_<FIELD>` or `VITRINE_<FIELD>`.
The module-level constants are limits that callers can rely on (see README.md).
"""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig

DEFAULT_PORT = 50052
SERVICE_NAME = "profile"

# Strings and ids.
MAX_ID_LENGTH = 128            # user_id, event_id, session_id, product_id, order_id, ...
MAX_STRING_LENGTH = 256        # category, query, coupon, context fields, trait values
MAX_URL_LENGTH = 2048          # page_url, context.referrer, context.user_agent
MAX_TRAIT_KEY_LENGTH = 64
MAX_TRAITS = 50
MAX_PRICE = 1e9
MAX_QUANTITY = 10_000
MAX_SCREEN_PIXELS = 100_000

# Bounded lists kept in a profile.
RECENTLY_VIEWED_LENGTH = 20
PURCHASED_IDS_LENGTH = 50
RECENT_SEARCHES_LENGTH = 10
RECENT_ORDER_IDS_LENGTH = 20
CART_ITEMS = 100
AFFINITY_CATEGORIES = 50
MAX_ALIASES = 100
DAILY_COUNT_DAYS = 120         # per-type daily counts kept (windows up to 90 days are answered)
EVENT_WINDOWS_DAYS = (1, 7, 30, 90)

# Time.
VISIT_TIMEOUT_MS = 30 * 60 * 1000   # 30 minutes of inactivity start a new visit
FUTURE_SKEW_MS = 5 * 60 * 1000      # events may be at most this far in the future
DEFAULT_RETENTION_DAYS = 400
DEFAULT_IDEMPOTENCY_TTL_HOURS = 7 * 24
DEFAULT_AFFINITY_HALF_LIFE_DAYS = 14.0
RFM_REFRESH_SECONDS = 1.0           # quantile boundaries are recomputed at most this often

# Ingest.
DEFAULT_BATCH_MAX_EVENTS = 20_000   # events per LMDB write transaction (group commit); see README
STREAM_CHUNK_EVENTS = 256           # a TrackStream hands events to the writer in chunks of this size
STREAM_CHUNKS_IN_FLIGHT = 16        # chunks of one stream waiting for their commit (backpressure)
STREAM_MAX_ERRORS = 100             # error strings returned in a TrackSummary
MAX_TRACK_BATCH = 1_000             # events in one TrackBatch request (one group commit)
SCAN_CHUNK = 512                    # rows read per LMDB read transaction in ScanProfiles/ScanEvents
PURGE_CHUNK_KEYS = 5_000            # keys visited per write transaction by the retention purge
LOCAL_APPLY_MAX_EVENTS = 2          # group commits of at most this many events skip the writer process
WRITER_START_TIMEOUT_SECONDS = 60.0 # the writer process must open the store within this
WRITER_STOP_TIMEOUT_SECONDS = 30.0  # ... and finish its transaction on shutdown, or it is killed

# Storage.
DEFAULT_MAP_SIZE_MB = 16_384        # LMDB map size (virtual address space; the file grows as needed)
LMDB_MAX_READERS = 512              # concurrent read transactions (reads run on many threads)
SCAN_VISIT_FACTOR = 8               # ScanEvents visits at most this many rows per row it returns per read

# The feed (FollowEvents).
FEED_DEFAULT_BATCH = 512            # log items read per LMDB read transaction when max_batch is 0
FEED_MAX_BATCH = 5_000              # largest max_batch honoured


@dataclasses.dataclass(frozen=True)
class ProfileConfig(ServerConfig):
    """Settings of the profile service."""

    data_dir: str = dataclasses.field(default="./data", metadata={"help": "data directory (files in <dir>/profile)"})
    map_size_mb: int = dataclasses.field(default=DEFAULT_MAP_SIZE_MB, metadata={"help": "LMDB map size, MiB (virtual)"})
    retention_days: int = dataclasses.field(
        default=DEFAULT_RETENTION_DAYS, metadata={"help": "events older than this many days are purged"}
    )
    idempotency_ttl_hours: int = dataclasses.field(
        default=DEFAULT_IDEMPOTENCY_TTL_HOURS, metadata={"help": "how long an event_id is remembered"}
    )
    affinity_half_life_days: float = dataclasses.field(
        default=DEFAULT_AFFINITY_HALF_LIFE_DAYS, metadata={"help": "half-life of category affinity, days"}
    )
    batch_max_events: int = dataclasses.field(
        default=DEFAULT_BATCH_MAX_EVENTS, metadata={"help": "most events in one write transaction"}
    )
    purge_interval_seconds: float = dataclasses.field(
        default=3600.0, metadata={"help": "how often the retention purge runs (0 = never)"}
    )
    sync: bool = dataclasses.field(
        default=True, metadata={"help": "fsync every commit (turn off only for throwaway data)"}
    )
    writer_process: bool = dataclasses.field(
        default=True,
        metadata={"help": "fold and commit events in a separate writer process (uses a second core)"},
    )
    # Scale-out mode (issue 17): JetStream is the system of record, this LMDB a rebuildable state store.
    event_log: str = dataclasses.field(
        default="", metadata={"help": "nats://host:port[,..]: scale-out mode with the event log in NATS "
                                      "JetStream (empty = the embedded LMDB log)"})
    shard_index: int = dataclasses.field(
        default=0, metadata={"help": "scale-out: this profile shard's index in [0, shard-count)"})
    shard_count: int = dataclasses.field(
        default=1, metadata={"help": "scale-out: number of profile shards (partition p -> shard p % count)"})
    event_log_partitions: int = dataclasses.field(
        default=16, metadata={"help": "scale-out: partitions of the stream (fixed for its life)"})
    event_log_replicas: int = dataclasses.field(
        default=1, metadata={"help": "scale-out: replicas of the stream (3 on a NATS cluster)"})
