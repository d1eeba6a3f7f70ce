"""Configuration and every limit of the journeys service.

Flags are `--field-name`; the environment `VITRINE_JOURNEYS_<FIELD>` or `VITRINE_<FIELD>`.
The module-level constants are limits and defaults documented in README.md.
"""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig

DEFAULT_PORT = 50055
SERVICE_NAME = "journeys"

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# Journey definitions.
MAX_JOURNEYS = 200
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 256
MAX_PARAMS = 20
MAX_PARAM_LENGTH = 256
MAX_SEGMENT_IDS = 20
MAX_K = 20
DEFAULT_K = 4                       # recommended items in a message when the journey says 0
MAX_DELAY_MS = 365 * DAY_MS
MAX_REENTRY_DAYS = 3650

# Kind defaults (overridable per journey in `params`, see README.md).
VISIT_TIMEOUT_MS = 30 * MINUTE_MS   # same as the profile service: 30 minutes of quiet end a visit
DEFAULT_WIN_BACK_DAYS = 90          # win-back: no purchase for this many days
DEFAULT_ENGAGED_DAYS = 14           # engaged-no-purchase window
DEFAULT_ENGAGED_OPENS = 2
DEFAULT_ENGAGED_CLICKS = 1
DEFAULT_PRICE_DROP_SHARE = 0.10     # price drop: at least 10% below the price the shopper saw
DEFAULT_WATCH_DAYS = 30             # back in stock / price drop: a view or cart counts this long
MAX_STATE_PRODUCTS = 20             # products kept in one journey state (cart, viewed, bought)
MAX_ENGAGEMENT_MARKS = 50           # open/click times kept per engaged-no-purchase state

# Sending.
DEFAULT_FREQUENCY_CAP = 1           # messages per shopper across journeys ...
DEFAULT_FREQUENCY_WINDOW_HOURS = 24  # ... in this many hours
DEFAULT_QUIET_START_HOUR = 21       # quiet hours in the shopper's local time: a message waits
DEFAULT_QUIET_END_HOUR = 8
DEFAULT_ATTRIBUTION_DAYS = 5
ATTRIBUTION_SKEW_MS = 5 * MINUTE_MS  # an open may carry a time this much before the send (clocks differ)
DEFAULT_SEND_RETRY_SECONDS = 60.0   # a backend was unavailable at send time: try again this much later
TIMER_BATCH = 64                    # due timers taken per pass of the timer loop
TIMER_CONCURRENCY = 8               # due messages being prepared (backend calls) at once
TIMER_IDLE_SECONDS = 1.0            # the timer loop looks again at least this often
BACKEND_TIMEOUT_SECONDS = 2.0       # deadline of every call to profile/segmentation/recommendation
FEED_BATCH = 256                    # feed items applied per LMDB write transaction

# Retention: delivered messages and expired watches are purged in chunks.
DEFAULT_MESSAGE_RETENTION_DAYS = 30  # delivered messages are kept this long (ListUserMessages, attribution)
PURGE_CHUNK_KEYS = 5_000             # keys visited per write transaction by the purge

# Delivery.
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 60.0
DEFAULT_PULL_MAX = 100
MAX_PULL = 1000
MAX_PULL_WAIT_MS = 30_000
MAX_ACK_IDS = 1000
MAX_DELIVERY_ATTEMPTS = 20          # then the message is dead-lettered (counted, no longer delivered)
MAX_USER_MESSAGES = 100
WEBHOOK_TIMEOUT_SECONDS = 5.0
WEBHOOK_BACKOFF_SECONDS = 1.0       # first retry delay; doubles per attempt ...
WEBHOOK_MAX_BACKOFF_SECONDS = 300.0  # ... up to this
WEBHOOK_CONCURRENCY = 4
SIGNATURE_HEADER = "X-Vitrine-Signature"


@dataclasses.dataclass(frozen=True)
class JourneysConfig(ServerConfig):
    """Settings of the journeys service."""

    data_dir: str = dataclasses.field(default="./data", metadata={"help": "data directory (files in <dir>/journeys)"})
    map_size_mb: int = dataclasses.field(default=8_192, metadata={"help": "LMDB map size, MiB (virtual)"})
    sync: bool = dataclasses.field(
        default=True, metadata={"help": "fsync every commit (turn off only for throwaway data)"}
    )
    profile_addresses: str = dataclasses.field(
        default="127.0.0.1:50052",
        metadata={"help": "profile service shards, comma-separated in shard order: event feeds and profiles"},
    )
    recommendation_address: str = dataclasses.field(
        default="127.0.0.1:50054", metadata={"help": "recommendation service: the catalog feed and items"}
    )
    segmentation_address: str = dataclasses.field(
        default="127.0.0.1:50053", metadata={"help": "segmentation service: segment filter and offers ('' = none)"}
    )
    follow_feeds: bool = dataclasses.field(
        default=True, metadata={"help": "follow the event and catalog feeds (off: only tests feed the engine)"}
    )
    store_timezone: str = dataclasses.field(
        default="UTC", metadata={"help": "IANA zone for quiet hours of shoppers without a timezone trait"}
    )
    quiet_start_hour: int = dataclasses.field(
        default=DEFAULT_QUIET_START_HOUR, metadata={"help": "quiet hours start (local hour; equal to end = off)"}
    )
    quiet_end_hour: int = dataclasses.field(default=DEFAULT_QUIET_END_HOUR, metadata={"help": "quiet hours end"})
    frequency_cap: int = dataclasses.field(
        default=DEFAULT_FREQUENCY_CAP, metadata={"help": "messages per shopper per window, across journeys (0 = none)"}
    )
    frequency_window_hours: float = dataclasses.field(
        default=DEFAULT_FREQUENCY_WINDOW_HOURS, metadata={"help": "frequency cap window, hours"}
    )
    attribution_days: float = dataclasses.field(
        default=DEFAULT_ATTRIBUTION_DAYS, metadata={"help": "opens, clicks and purchases count this long after a send"}
    )
    visibility_timeout_seconds: float = dataclasses.field(
        default=DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
        metadata={"help": "a pulled message not acked within this is delivered again"},
    )
    send_retry_seconds: float = dataclasses.field(
        default=DEFAULT_SEND_RETRY_SECONDS,
        metadata={"help": "a due message whose backends are down is tried again after this"},
    )
    message_retention_days: float = dataclasses.field(
        default=DEFAULT_MESSAGE_RETENTION_DAYS,
        metadata={"help": "delivered messages older than this are deleted (at least the attribution window)"},
    )
    purge_interval_seconds: float = dataclasses.field(
        default=3600.0, metadata={"help": "how often delivered messages and expired watches are purged (0 = never)"}
    )
    webhook_url: str = dataclasses.field(
        default="", metadata={"help": "POST each message as JSON here (and ack it on a 2xx); '' = pull only"}
    )
    webhook_secret: str = dataclasses.field(
        default="", metadata={"help": f"HMAC-SHA256 key of the {SIGNATURE_HEADER} header"}
    )

    def profile_targets(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.profile_addresses.split(",") if a.strip())
