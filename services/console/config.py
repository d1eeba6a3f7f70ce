"""Configuration and every limit of the console (the operator's web pages over HTTP).

Flags are `--field-name`; the environment `VITRINE_CONSOLE_<FIELD>` or `VITRINE_<FIELD>`
(so the password is `VITRINE_CONSOLE_PASSWORD`). The module-level constants are the
limits and deadlines the pages rely on (see README.md).
"""

from __future__ import annotations

import dataclasses

from services.common.config import ServerConfig

SERVICE_NAME = "console"
DEFAULT_PORT = 8080
DEV_PASSWORD = "vitrine"  # development mode only; production mode refuses to start without a password

# Deadlines of the gRPC calls the console makes (seconds). The customer page's calls run in
# parallel, so the page waits for the slowest, never for the sum.
CALL_TIMEOUT_S = 2.0            # one read or write of a profile, segment, offer, journey
PERSONALIZE_DEADLINE_MS = 250   # the gateway's own budget for one "what this shopper sees" answer
PERSONALIZE_TIMEOUT_S = 1.0     # our deadline for it (the gateway answers a fallback in its budget)
ESTIMATE_TIMEOUT_S = 30.0       # EstimateSize scans every stored profile
RULE_CHECK_TIMEOUT_S = 5.0      # the size shown while a rule is typed
EXPORT_TIMEOUT_S = 600.0        # a whole audience streamed as CSV
RESULTS_TIMEOUT_S = 10.0        # experiment results and journey statistics

# What the pages show.
TIMELINE_EVENTS = 200           # newest stored events on the customer page (all are in the JSON export)
USER_MESSAGES = 50              # journey messages of one shopper
TRENDING_ITEMS = 20
TRENDING_OOS_SCAN = 100         # trending items inspected for "popular but out of stock"
AFFINITY_BARS = 12              # categories in the affinity chart
AUDIT_PAGE_LINES = 200          # newest audit lines on the audit page
RECENT_AUDIT_LINES = 500        # audit lines searched for a shopper's recent operator actions
MAX_QUERY_LENGTH = 128          # a search box entry (the profile service's id limit)
MAX_RULE_LENGTH = 4096
PAGE_TYPES = ("home", "product", "category", "cart", "checkout", "search")

# Login.
LOGIN_FAILURES_ALLOWED = 5      # per client address in LOGIN_WINDOW_S; beyond it 429
LOGIN_WINDOW_S = 300.0
SESSION_COOKIE = "vitrine_console"


@dataclasses.dataclass(frozen=True)
class ConsoleConfig(ServerConfig):
    """Settings of the console. `port` is the HTTP port; the TLS files serve HTTPS."""

    gateway_address: str = dataclasses.field(default="127.0.0.1:50051", metadata={"help": "gateway host:port"})
    segmentation_address: str = dataclasses.field(
        default="127.0.0.1:50053", metadata={"help": "segmentation host:port"})
    recommendation_address: str = dataclasses.field(
        default="127.0.0.1:50054", metadata={"help": "recommendation host:port"})
    journeys_address: str = dataclasses.field(
        default="127.0.0.1:50055", metadata={"help": "journeys host:port (pages degrade while it is absent)"})
    password: str = dataclasses.field(
        default="", metadata={"help": "operator password (kept only as a scrypt hash in memory)"})
    password_hash: str = dataclasses.field(
        default="", metadata={"help": "operator password as a scrypt hash (python -m services.console.auth)"})
    production: bool = dataclasses.field(
        default=False, metadata={"help": "refuse to start without a password; secure (HTTPS-only) cookies"})
    session_secret: str = dataclasses.field(
        default="", metadata={"help": "key that signs session cookies (empty = random: restart logs everyone out)"})
    session_max_age_seconds: int = dataclasses.field(
        default=8 * 3600, metadata={"help": "how long a login lasts"})
    data_dir: str = dataclasses.field(
        default="./data", metadata={"help": "data directory (the audit log is <dir>/console/audit.jsonl)"})
    backend_tls: bool = dataclasses.field(default=False, metadata={"help": "call the backends over TLS"})
