"""Prometheus metrics of the profile service's write path (served by the service process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WRITER_STARTS = Counter("vitrine_profile_writer_starts_total",
                        "writer processes started (more than one: the writer was restarted after a crash)")
WRITE_BATCH_EVENTS = Histogram("vitrine_profile_write_batch_events", "events per group-commit write transaction",
                               buckets=(1, 8, 32, 128, 512, 1000, 2000, 5000, 10000, 20000))
WRITE_BATCH_SECONDS = Histogram("vitrine_profile_write_batch_seconds",
                                "time of one group-commit write transaction, fsync included",
                                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
FEED_ITEMS = Counter("vitrine_profile_feed_items_total", "log items sent on FollowEvents streams")
FEED_FOLLOWERS_AT_HEAD = Gauge("vitrine_profile_feed_followers_at_head",
                               "FollowEvents streams caught up and waiting for the next commit")
