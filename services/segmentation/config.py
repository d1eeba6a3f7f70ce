"""Settings of the segmentation service, and every limit and threshold as a named constant.

Built-in segment thresholds live here too (see README.md for their definitions); a change
here changes who is in a built-in segment, so keep README.md in step.
"""

from __future__ import annotations

import dataclasses
import re

from services.common.config import ServerConfig

DEFAULT_PORT = 50053

# --- built-in segment thresholds -------------------------------------------------
NEW_VISITOR_MAX_VISITS = 1            # new_visitor: visit_count <= this and no purchase
RETURNING_MIN_VISITS = 2              # returning_visitor / returning_customer: visit_count >= this
VIP_MIN_RFM_TOTAL = 13                # vip: r_score + f_score + m_score >= this (each 1..5) ...
VIP_MIN_PURCHASES = 2                 # ... and purchase_count >= this
AT_RISK_MIN_PURCHASES = 2             # at_risk: purchase_count >= this or m_score >= AT_RISK_MIN_M_SCORE ...
AT_RISK_MIN_M_SCORE = 4
AT_RISK_QUIET_DAYS = 60               # ... and no purchase for at least this many days
CART_ABANDON_MINUTES = 60             # cart_abandoner: cart untouched this long, no checkout since

# Built-in segment priorities (store segments may use PRIORITY_MIN..PRIORITY_MAX and so
# rank above or below them).
BUILTIN_PRIORITIES = {
    "vip": 100,
    "at_risk": 90,
    "cart_abandoner": 80,
    "returning_customer": 70,
    "returning_visitor": 60,
    "new_visitor": 50,
    "registered": 40,
    "guest": 30,
    "utm_campaign": 20,
    "source": 15,
    "geo": 10,
    "device": 5,
}

# --- limits --------------------------------------------------------------------
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")   # segment and offer ids
PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
MAX_SEGMENTS = 1000                   # store-defined segments
MAX_OFFERS = 1000
MAX_NAME_CHARS = 200                  # segment name, offer title
MAX_DESCRIPTION_CHARS = 2000          # segment description, offer body
MAX_RULE_CHARS = 8192                 # same as scoring.rules.parser.MAX_RULE_CHARS
MAX_SLOT_CHARS = 64
MAX_COUPON_CHARS = 64
MAX_OFFER_SEGMENTS = 50               # segment_ids of one offer
MAX_PAYLOAD_ENTRIES = 50
MAX_PAYLOAD_KEY_CHARS = 64
MAX_PAYLOAD_VALUE_CHARS = 2000
MAX_CONTEXT_VALUE_CHARS = 64          # longer context values make no source:/device:/geo: segment
MAX_EVENT_DAYS = 365                  # events(TYPE, days=N): 1 <= N <= this
LMDB_MAP_SIZE = 1 << 30               # bytes reserved (sparse) for segment and offer definitions
ESTIMATE_CHUNK_ROWS = 16_384          # EstimateSize holds and evaluates this many profiles per NumPy pass
ESTIMATE_YIELD_EVERY = 1024           # give the event loop a turn every this many scanned profiles

# --- experiments -----------------------------------------------------------------
MAX_EXPERIMENTS = 100                 # stored experiments (each one is hashed on every Evaluate)
MIN_VARIANTS = 2
MAX_VARIANTS = 20
MAX_VARIANT_WEIGHT = 1_000_000        # weights are relative integers > 0
MAX_VARIANT_K = 100                   # the gateway's MAX_K: items per placement
MAX_EXPERIMENT_SEGMENTS = 50          # segment_ids of one experiment (any of)
MAX_HASH_SEED_CHARS = 64
ASSIGNMENT_CACHE_SIZE = 16_384        # recent shoppers whose variants Evaluate keeps (saves ~3 us of hashing a call)
SRM_P_THRESHOLD = 0.001               # srm_detected below this p-value (strict: checked often, rarely false)
RESULTS_CONFIDENCE = 0.95             # every interval of GetExperimentResults
RESULTS_MAP_SIZE = 4 << 30            # bytes reserved (sparse) for the results' LMDB (one record per exposed shopper)
FOLLOW_BATCH_ITEMS = 512              # feed items applied (and the cursor stored) per LMDB write transaction
EXPORT_CHUNK_ROWS = 1024              # ExportAudience: profiles evaluated per NumPy pass (small: members stream early)


@dataclasses.dataclass(frozen=True)
class SegmentationConfig(ServerConfig):
    data_dir: str = dataclasses.field(
        default="./data", metadata={"help": "data directory; definitions live in <data_dir>/segmentation/"}
    )
    profile_addresses: str = dataclasses.field(
        default="127.0.0.1:50052",
        metadata={"help": "profile service shards for EstimateSize, comma-separated, in shard order"},
    )
    scan_timeout_seconds: float = dataclasses.field(
        default=120.0, metadata={"help": "deadline of one EstimateSize scan over all profile shards"}
    )
    cart_abandon_minutes: int = dataclasses.field(
        default=CART_ABANDON_MINUTES, metadata={"help": "cart_abandoner: minutes since the last cart change"}
    )
    at_risk_quiet_days: int = dataclasses.field(
        default=AT_RISK_QUIET_DAYS, metadata={"help": "at_risk: days without a purchase"}
    )
    # Off: measured end to end it does not pay on Personalize (benchmarks/segmentation.md, "Wire
    # reader end to end"); EstimateSize keeps it (5x on a scan).
    wire_reader: bool = dataclasses.field(
        default=False, metadata={"help": "Evaluate reads rule features straight from the serialized profile "
                                         "(the Numba wire reader) instead of through protobuf's parser"}
    )
    follow_events: bool = dataclasses.field(
        default=True, metadata={"help": "follow every profile shard's event log (FollowEvents) for experiment results"}
    )

    @property
    def profile_targets(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.profile_addresses.split(",") if a.strip())
