"""Tunables of the event log (documented in services/eventlog/README.md)."""

from __future__ import annotations

STREAM_NAME = "VITRINE_EVENTS"
SUBJECT_PREFIX = "vitrine.events"
# Partitions are fixed for the life of a stream (a shopper's partition never changes); shards own
# partitions, so a shard count change moves whole partitions, never single shoppers.
DEFAULT_PARTITIONS = 16
# Replicas of the stream: 3 in Kubernetes (a NATS node may die), 1 on one machine.
DEFAULT_REPLICAS = 1
# JetStream de-duplicates by Nats-Msg-Id (the event's idempotency key) within this window; beyond
# it the shard's own idempotency keys (7 days) still apply each event once.
DUPLICATE_WINDOW_SECONDS = 3600.0
# At least the profile retention window (services/profile/config.py, 400 days).
MAX_AGE_DAYS = 400
# Seconds a publish waits for JetStream's (replicated) acknowledgement.
PUBLISH_TIMEOUT_SECONDS = 10.0
# Messages one fetch of a shard consumer asks for (one LMDB group commit each).
FETCH_BATCH = 1000
# Seconds one fetch waits for messages when the partition is at its head.
FETCH_WAIT_SECONDS = 0.5
# How long a read waits (at most) for its shard to apply a Track's position.
READ_WAIT_SECONDS = 2.0
# Pause before a shard retries a failed fetch (NATS node lost) or a failed fold (disk full).
RETRY_SECONDS = 0.5
# How long a starting shard retries creating/checking the stream (a NATS leader election after a
# node is lost takes seconds).
START_WAIT_SECONDS = 30.0
