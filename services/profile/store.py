"""Profile storage: a small typed interface and its LMDB implementation.

One LMDB environment under `<data_dir>/profile/` with named databases:

| db          | key                                   | value                                   |
|-------------|---------------------------------------|-----------------------------------------|
| `profiles`  | user_id                               | StoredProfile (protobuf)                |
| `events`    | user_id 0x00 ts_ms(8, BE) seq(8, BE)  | flags(1) [+ Event, imported events only] |
| `aliases`   | alias_id                              | target user_id                          |
| `alias_rev` | target_id 0x00 alias_id               | empty                                   |
| `idem`      | user_id 0x00 event_id                 | created, Unix seconds (4, BE)           |
| `meta`      | `seq`, `log_start`, `rfm:<r|f|m>:<bucket>` | counters (8, LE)                   |
| `log`       | seq (8, BE)                           | LoggedEvent (protobuf, no seq)          |
| `log_ids`   | user_id 0x00 seq(8, BE)               | empty: the user's Identity log items    |

`log` is the feed (FollowEvents): every applied event, Identity and Erasure in seq order,
written in the same transaction as the change it records, so an item is visible exactly
when its change is durable. Seqs are never reused; the log has gaps where items were
redacted. Redaction: an erasure deletes the erased shopper's log items (events found through
the seqs in their `events` keys, Identity items through `log_ids`) in the same transaction
that appends the Erasure item, so the feed never replays erased personal data; the retention
purge deletes the log item of each event it purges and trims the head of the log (see
`trim_log`), moving `log_start`. Imported events (ImportProfile, a shard move) take seqs but
are not logged: the shard they came from logged them already.

`events` is the per-shopper index of the log: the event itself is stored once, in its `log`
item (the row's key ends with the seq), so a write dirties few pages of the random-order
`events` tree; imported events, which have no log item, keep their payload in the row (as
every row did before the feed existed, which is still read).
A prefix scan `user_id 0x00` on `events` gives a shopper's log in time order; user ids
never contain control characters, so the prefix is exact. Every key that names a user
starts with its id (or, in `aliases`, is the alias id), so erasure is a handful of
prefix deletions. Write methods must be called from one thread at a time (the service's
writer thread, or the writer process, see writer.py); read methods from any thread. Each
write method is one transaction (`transaction.write_transaction`): it commits (with fsync
unless sync=False) before it returns, or changes nothing. Write methods read the `seq`
counter and the RFM counts they change from their own transaction, never from memory, so a
store stays correct when another process (a writer process, or one left over from a killed
service) has written in between.

Modules: `keys.py` (this layout's codec), `transaction.py` (one write transaction),
this file (the store, reads, the event write path and consent), `identity.py` (Identify,
aliases, ImportProfile), `erasure.py` (DeleteProfile, ExportProfile), `retention.py`
(purges). The domain rules (merge, traits, consent ordering, imported affinity) are in fold.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import lmdb

from services.profile import config as C
from services.profile import erasure, fold, identity, retention
from services.profile.erasure import DeleteResult
from services.profile.keys import (
    DB_NAMES,
    FLAG_BYTES,
    META_LOG_START,
    META_RFM,
    META_SEQ,
    SEP,
    SEQ,
    TS_SEQ,
    U32,
    U64,
    Txn,
    event_key_time,
    logged_event_bytes,
    prefix_items,
    read_txn,
    seq_of_event_key,
)
from services.profile.rfm import RfmSketch
from services.profile.transaction import write_transaction
from vitrine.v1 import common_pb2, profile_pb2

__all__ = ["DB_NAMES", "SEP", "DeleteResult", "LmdbProfileStore", "ProfileStore", "StoredEvent", "TrackResult"]


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    user_id: str   # the profile the event belongs to
    flags: int     # fold.FLAG_NO_PERSONALIZATION when personalization was withdrawn
    event: common_pb2.Event


class TrackResult(NamedTuple):
    applied: bool  # False: duplicate event_id
    user_id: str   # the profile it was applied to (after aliases)
    seq: int = 0   # its log position (0 for a duplicate)


class ProfileStore(Protocol):
    """What the profile engine needs from storage."""

    def get(self, user_id: str) -> profile_pb2.StoredProfile | None: ...
    def apply_events(self, events: Sequence[common_pb2.Event], now_ms: int) -> list[TrackResult]: ...
    def identify(self, anonymous_id: str, customer_id: str, traits: Mapping[str, str],
                 now_ms: int) -> profile_pb2.StoredProfile: ...
    def set_consent(self, user_id: str, consent: common_pb2.Consent, now_ms: int) -> profile_pb2.StoredProfile: ...
    def delete(self, user_id: str, now_ms: int = 0) -> DeleteResult: ...
    def export(self, user_id: str, now_ms: int) -> dict[str, Any]: ...
    def scan_profiles(self, start_after: str, limit: int) -> list[profile_pb2.StoredProfile]: ...
    def scan_events(self, after_key: bytes, since_ms: int, until_ms: int, types: frozenset[int],
                    limit: int) -> tuple[list[StoredEvent], bytes | None]: ...
    def import_profile(self, profile: common_pb2.Profile, events: Sequence[common_pb2.Event],
                       now_ms: int) -> profile_pb2.StoredProfile: ...
    def put_alias(self, alias_id: str, target_id: str) -> bool: ...
    def purge_events(self, cutoff_ms: int, start_key: bytes, max_keys: int) -> tuple[int, bytes | None]: ...
    def expire_idempotency(self, cutoff_s: int, start_key: bytes, max_keys: int) -> tuple[int, bytes | None]: ...
    def trim_log(self, cutoff_ms: int, max_keys: int) -> tuple[int, bool]: ...
    def log_bounds(self) -> tuple[int, int]: ...
    def read_log(self, from_seq: int, limit: int) -> list[tuple[int, bytes]]: ...
    def close(self) -> None: ...


class LmdbProfileStore:
    """ProfileStore on one LMDB environment (see the module docstring for the layout)."""

    def __init__(
        self,
        path: str | Path,
        *,
        map_size_mb: int = C.DEFAULT_MAP_SIZE_MB,
        sync: bool = True,
        settings: fold.FoldSettings = fold.FoldSettings(),
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.env = lmdb.open(
            str(self.path), map_size=map_size_mb * 1024 * 1024, max_dbs=len(DB_NAMES) + 2, sync=sync,
            metasync=sync, readahead=False, max_readers=C.LMDB_MAX_READERS,
        )
        self.dbs = {name.decode(): self.env.open_db(name) for name in DB_NAMES}
        self.profiles = self.dbs["profiles"]
        self.events = self.dbs["events"]
        self.aliases = self.dbs["aliases"]
        self.alias_rev = self.dbs["alias_rev"]
        self.idem = self.dbs["idem"]
        self.meta = self.dbs["meta"]
        self.log = self.dbs["log"]
        self.log_ids = self.dbs["log_ids"]
        self.rfm = RfmSketch()
        # Called with the RFM deltas of each durable commit (the writer process forwards them).
        self.on_commit: Callable[[dict[bytes, int]], None] | None = None
        self.rfm.load(self._rfm_items())

    def _rfm_items(self) -> list[tuple[bytes, bytes]]:
        with read_txn(self.env) as txn:
            return prefix_items(txn, self.meta, META_RFM)

    def reload_rfm(self) -> None:
        """Reload the RFM population from LMDB: for a process that reads while another one (the
        writer process) writes, after it may have missed some of that process's changes."""
        sketch = RfmSketch()
        sketch.load(self._rfm_items())
        self.rfm = sketch  # one reference swap: concurrent readers see the old or the new one

    def close(self) -> None:
        self.env.close()

    # ------------------------------------------------- helpers for one open transaction
    def resolve_in(self, txn: Txn, user: bytes) -> bytes:
        """The profile id `user` stands for: itself, or the target of its alias."""
        target = txn.get(user, db=self.aliases)
        return target if target is not None else user

    def load_in(self, txn: Txn, user: bytes) -> profile_pb2.StoredProfile | None:
        raw = txn.get(user, db=self.profiles)
        return None if raw is None else profile_pb2.StoredProfile.FromString(raw)

    def event_at(self, txn: Txn, key: bytes, value: bytes) -> common_pb2.Event | None:
        """The event an `events` row stands for: its payload is in the log item of its seq (the
        key ends with it), or in the row itself for imported events (not on this shard's feed)."""
        if len(value) > 1:
            return common_pb2.Event.FromString(value[1:])
        raw = txn.get(seq_of_event_key(key), db=self.log)
        return None if raw is None else profile_pb2.LoggedEvent.FromString(raw).event

    def events_in(self, txn: Txn, user: bytes, limit: int = 0) -> list[StoredEvent]:
        """The events stored under exactly `user`, oldest first."""
        prefix = user + SEP
        name = user.decode()
        out: list[StoredEvent] = []
        cursor = txn.cursor(db=self.events)
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                event = self.event_at(txn, key, value)
                if event is None:
                    continue
                event.user_id = name
                out.append(StoredEvent(name, value[0], event))
                if limit and len(out) >= limit:
                    break
        return out

    # --------------------------------------------------------------------------------- reads
    def get(self, user_id: str) -> profile_pb2.StoredProfile | None:
        """The profile of `user_id` or of the id it is an alias of."""
        with read_txn(self.env) as txn:
            return self.load_in(txn, self.resolve_in(txn, user_id.encode()))

    def resolve(self, user_id: str) -> str:
        with read_txn(self.env) as txn:
            return self.resolve_in(txn, user_id.encode()).decode()

    def alias_target(self, user_id: str) -> str:
        """The id `user_id` is an alias of on this store ("" if none); reads no profile."""
        with read_txn(self.env, self.aliases) as txn:
            target = txn.get(user_id.encode())
        return target.decode() if target is not None else ""

    def own_events(self, user_id: str, limit: int = 0) -> list[StoredEvent]:
        """The log stored under exactly `user_id` (no alias following), oldest first."""
        with read_txn(self.env, self.events) as txn:
            return self.events_in(txn, user_id.encode(), limit)

    def user_events(self, user_id: str) -> list[StoredEvent]:
        """The stored log of one profile (after aliases), oldest first."""
        with read_txn(self.env, self.events) as txn:
            return self.events_in(txn, self.resolve_in(txn, user_id.encode()))

    def scan_profiles(self, start_after: str, limit: int) -> list[profile_pb2.StoredProfile]:
        out: list[profile_pb2.StoredProfile] = []
        start = start_after.encode()
        with read_txn(self.env, self.profiles) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(start):
                return out
            for key, value in cursor:
                if key == start and start:
                    continue
                out.append(profile_pb2.StoredProfile.FromString(value))
                if len(out) >= limit:
                    break
        return out

    def scan_events(self, after_key: bytes, since_ms: int, until_ms: int, types: frozenset[int],
                    limit: int) -> tuple[list[StoredEvent], bytes | None]:
        """Up to `limit` events after `after_key` (exclusive) in key order (by user, then time);
        returns them and the key to continue after (None at the end)."""
        out: list[StoredEvent] = []
        last: bytes | None = None
        visited = 0
        with read_txn(self.env, self.events) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(after_key):
                return out, None
            for key, value in cursor:
                if key == after_key:
                    continue
                last = key
                visited += 1
                ts, sep = event_key_time(key)
                if ts >= since_ms and (not until_ms or ts < until_ms):
                    event = self.event_at(txn, key, value)
                    if event is not None and (not types or event.type in types):
                        user = key[:sep].decode()
                        event.user_id = user
                        out.append(StoredEvent(user, value[0], event))
                if len(out) >= limit or visited >= limit * C.SCAN_VISIT_FACTOR:
                    return out, last
        return out, None

    def count(self, db_name: str) -> int:
        with read_txn(self.env) as txn:
            return int(txn.stat(self.dbs[db_name])["entries"])

    # ------------------------------------------------------------------------------ the feed
    def log_bounds(self) -> tuple[int, int]:
        """(log_start, head): the first seq the feed can still serve (older ones were trimmed
        by retention) and the last seq given out (0 for an empty log)."""
        with read_txn(self.env, self.meta) as txn:
            start, head = txn.get(META_LOG_START), txn.get(META_SEQ)
        return (U64.unpack(start)[0] if start else 1), (U64.unpack(head)[0] if head else 0)

    def read_log(self, from_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, serialized LoggedEvent without seq) from `from_seq` on, in order.
        An event item without canonical_user_id was applied to its own user_id (see
        `feed_item`, which fills it in)."""
        out: list[tuple[int, bytes]] = []
        with read_txn(self.env, self.log) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(SEQ.pack(from_seq)):
                return out
            unpack = SEQ.unpack
            for key, value in cursor:
                out.append((unpack(key)[0], value))
                if len(out) >= limit:
                    break
        return out

    @staticmethod
    def feed_item(seq: int, raw: bytes) -> profile_pb2.LoggedEvent:
        """A log item as the feed serves it: with its seq and canonical_user_id always set."""
        item = profile_pb2.LoggedEvent.FromString(raw)
        item.seq = seq
        if not item.canonical_user_id:
            item.canonical_user_id = item.event.user_id
        return item

    # -------------------------------------------------------------------------------- writes
    def apply_events(self, events: Sequence[common_pb2.Event], now_ms: int,
                     meta: Mapping[bytes, bytes] | None = None) -> list[TrackResult]:
        """Fold validated events into their profiles, append them to the log (the feed), index
        them per shopper and remember their event_ids, all in one transaction (group commit).
        Duplicates are skipped. The hot path of ingest: written for few Python operations.
        `meta` rows are written in the same transaction (a scale-out shard's stream cursor,
        services/eventlog/shard.py, so fold and cursor commit together)."""
        results: list[TrackResult] = []
        cache: dict[bytes, list[Any]] = {}
        resolved: dict[str, tuple[bytes, bytes, str]] = {}  # user_id -> (profile id, its key prefix, as str)
        created = U32.pack(now_ms // 1000)
        settings = self.settings
        apply_event = fold.apply_event
        idem_db, events_db, log_db = self.idem, self.events, self.log
        pack, pack_seq = TS_SEQ.pack, SEQ.pack
        off = fold.FLAG_NO_PERSONALIZATION
        with write_transaction(self) as w:
            txn = w.txn
            put = txn.put
            seq = w.seq
            for event in events:
                uid = event.user_id
                names = resolved.get(uid)
                if names is None:
                    target = self.resolve_in(txn, uid.encode())
                    names = resolved[uid] = (target, target + SEP, target.decode())
                user, prefix, user_id = names
                # Remember the event id; an existing key (also one from this batch) is a duplicate.
                if not put(prefix + event.event_id.encode(), created, db=idem_db, overwrite=False):
                    results.append(TrackResult(False, user_id))
                    continue
                entry = cache.get(user)
                if entry is None:
                    loaded = self.load_in(txn, user)
                    state = fold.new_state(user_id) if loaded is None else loaded
                    # [state, RFM key before, flags]: consent does not change within a group commit
                    entry = [state, None if loaded is None else fold.rfm_key(loaded.profile),
                             0 if state.profile.consent.personalization else off]
                    cache[user] = entry
                state, _, flags = entry
                apply_event(state, event, flags, settings)
                seq += 1
                put(prefix + pack(event.timestamp_ms, seq), FLAG_BYTES[flags], db=events_db)
                # The log item names the profile only when it differs from the event's user_id.
                put(pack_seq(seq), logged_event_bytes(event.SerializeToString(), b"" if user_id == uid else user,
                                                      flags), db=log_db, append=True)
                results.append(TrackResult(True, user_id, seq))
            w.seq = seq
            changes = []
            for user, (state, old, _) in cache.items():
                put(user, state.SerializeToString(), db=self.profiles)
                changes.append((old, fold.rfm_key(state.profile)))
            w.rfm(changes)
            for key, value in (meta or {}).items():
                put(key, value, db=self.meta)
        return results

    def set_consent(self, user_id: str, consent: common_pb2.Consent, now_ms: int) -> profile_pb2.StoredProfile:
        """Store the consent decision (creating the profile if needed); the rules (an older
        decision is ignored, withdrawing personalization forgets the signals) are fold's."""
        with write_transaction(self) as w:
            user = self.resolve_in(w.txn, user_id.encode())
            state = self.load_in(w.txn, user) or fold.new_state(user.decode())
            if fold.apply_consent(state, consent, now_ms):
                w.txn.put(user, state.SerializeToString(), db=self.profiles)
            else:
                w.discard()
        return state

    # ---------------------------------------- writes by responsibility, in their own modules
    def identify(self, anonymous_id: str, customer_id: str, traits: Mapping[str, str],
                 now_ms: int) -> profile_pb2.StoredProfile:
        return identity.identify(self, anonymous_id, customer_id, traits, now_ms)

    def put_alias(self, alias_id: str, target_id: str) -> bool:
        return identity.put_alias(self, alias_id, target_id)

    def import_profile(self, profile: common_pb2.Profile, events: Sequence[common_pb2.Event],
                       now_ms: int) -> profile_pb2.StoredProfile:
        return identity.import_profile(self, profile, events, now_ms)

    def delete(self, user_id: str, now_ms: int = 0) -> DeleteResult:
        return erasure.delete(self, user_id, now_ms)

    def export(self, user_id: str, now_ms: int) -> dict[str, Any]:
        return erasure.export(self, user_id, now_ms)

    def purge_events(self, cutoff_ms: int, start_key: bytes, max_keys: int) -> tuple[int, bytes | None]:
        return retention.purge_events(self, cutoff_ms, start_key, max_keys)

    def trim_log(self, cutoff_ms: int, max_keys: int) -> tuple[int, bool]:
        return retention.trim_log(self, cutoff_ms, max_keys)

    def expire_idempotency(self, cutoff_s: int, start_key: bytes, max_keys: int) -> tuple[int, bytes | None]:
        return retention.expire_idempotency(self, cutoff_s, start_key, max_keys)
