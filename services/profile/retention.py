"""Retention: the purge of old events (and their feed items), the head of the feed log, and
expired idempotency keys. Each call is one bounded write transaction (the engine loops)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.profile.keys import META_LOG_START, SEQ, U32, U64, event_key_time, seq_of_event_key
from services.profile.transaction import write_transaction
from vitrine.v1 import profile_pb2

if TYPE_CHECKING:
    from services.profile.store import LmdbProfileStore


def purge_events(store: LmdbProfileStore, cutoff_ms: int, start_key: bytes, max_keys: int) -> tuple[int, bytes | None]:
    """Delete events older than cutoff_ms (index row and feed item), visiting at most max_keys
    keys from start_key; each user's log is in time order, so the scan jumps to the next user
    at the first young event. Returns (deleted, key to resume from or None when done)."""
    deleted = 0
    with write_transaction(store) as w:
        txn = w.txn
        cursor = txn.cursor(db=store.events)
        positioned = cursor.set_range(start_key)
        visited = 0
        while positioned and visited < max_keys:
            key = cursor.key()
            if not key:
                positioned = False
                break
            visited += 1
            ts, sep = event_key_time(key)
            if ts < cutoff_ms:
                deleted += 1
                txn.delete(seq_of_event_key(key), db=store.log)  # its feed item goes with it
                positioned = cursor.delete() and bool(cursor.key())
            else:
                positioned = cursor.set_range(key[:sep] + b"\x01")
        resume = cursor.key() if positioned else None
    return deleted, resume or None


def _item_time(item: profile_pb2.LoggedEvent) -> int:
    kind = item.WhichOneof("item")
    if kind == "event":
        return item.event.timestamp_ms
    return item.erasure.erased_ms if kind == "erasure" else item.identity.identified_ms


def trim_log(store: LmdbProfileStore, cutoff_ms: int, max_keys: int) -> tuple[int, bool]:
    """Delete feed items older than cutoff_ms from the head of the log, at most max_keys per
    call, stopping at the first younger item; `log_start` moves past what was trimmed.
    (Old events further on are deleted with the events themselves, by purge_events.)
    Returns (deleted, done)."""
    deleted = 0
    done = False
    with write_transaction(store) as w:
        txn = w.txn
        cursor = txn.cursor(db=store.log)
        start = None
        positioned = cursor.first()
        while True:
            if not positioned:
                done = True
                break
            if deleted >= max_keys:
                break
            if _item_time(profile_pb2.LoggedEvent.FromString(cursor.value())) >= cutoff_ms:
                done = True
                break
            start = SEQ.unpack(cursor.key())[0] + 1
            deleted += 1
            positioned = cursor.delete() and bool(cursor.key())
        if start is not None:
            txn.put(META_LOG_START, U64.pack(start), db=store.meta)
        else:
            w.discard()
    return deleted, done


def expire_idempotency(store: LmdbProfileStore, cutoff_s: int, start_key: bytes,
                       max_keys: int) -> tuple[int, bytes | None]:
    """Forget event_ids remembered before cutoff_s (Unix seconds), max_keys keys per call."""
    deleted = 0
    with write_transaction(store) as w:
        cursor = w.txn.cursor(db=store.idem)
        positioned = cursor.set_range(start_key)
        visited = 0
        while positioned and visited < max_keys:
            visited += 1
            if U32.unpack(cursor.value())[0] < cutoff_s:
                deleted += 1
                positioned = cursor.delete() and bool(cursor.key())
            else:
                positioned = cursor.next()
        resume = cursor.key() if positioned else None
    return deleted, resume or None
