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
write method is one transaction: it commits (with fsync unless sync=False) before it returns,
or changes nothing. Write methods read the `seq` counter and the RFM counts they change from
their own transaction, never from memory, so a store stays correct when another process
(a writer process, or one left over from a killed service) has written in between.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import lmdb
from google.protobuf import json_format

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from services.profile import config as C
from services.profile import fold
from services.profile.rfm import RfmSketch
from vitrine.v1 import common_pb2, profile_pb2

_TS_SEQ = struct.Struct(">QQ")
_U32 = struct.Struct(">I")
_U64 = struct.Struct("<Q")
_SEQ = struct.Struct(">Q")
_I64 = struct.Struct("<q")  # RFM bucket counts (RfmSketch.encode)
SEP = b"\x00"
DB_NAMES = (b"profiles", b"events", b"aliases", b"alias_rev", b"idem", b"meta", b"log", b"log_ids")
IMPORT_MARKER = b"import:"
FLAG_BYTES = (b"\x00", b"\x01")  # an `events` row's value: its flags byte alone


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    user_id: str   # the profile the event belongs to
    flags: int     # fold.FLAG_NO_PERSONALIZATION when personalization was withdrawn
    event: common_pb2.Event


class TrackResult(NamedTuple):
    applied: bool  # False: duplicate event_id
    user_id: str   # the profile it was applied to (after aliases)
    seq: int = 0   # its log position (0 for a duplicate)


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    deleted: bool
    events_deleted: int
    aliases_deleted: int


class ProfileStore(Protocol):
    """What the profile engine needs from storage."""

    def get(self, user_id: str) -> profile_pb2.StoredProfile | None: ...
    def apply_events(self, events: Sequence[common_pb2.Event], now_ms: int) -> list[TrackResult]: ...
    def identify(self, anonymous_id: str, customer_id: str, traits: dict[str, str],
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


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Wire tags (field number << 3 | 2) of LoggedEvent.event and LoggedEvent.canonical_user_id.
_TAG_LOGGED_EVENT, _TAG_CANONICAL = b"\x12", b"\x22"
_PERSONALIZATION_OFF = b"\x30\x01"  # LoggedEvent.personalization_off = true
_VARINTS = [_varint(n) for n in range(1 << 14)]  # lengths of events and ids: one list index, no loop


def logged_event_bytes(event: bytes, canonical: bytes, flags: int) -> bytes:
    """A serialized LoggedEvent (without seq) around an already serialized Event, built by hand
    so the event is serialized once per write (for the log, which is also the feed)."""
    n, m = len(event), len(canonical)
    out = b"".join((_TAG_LOGGED_EVENT, _VARINTS[n] if n < 16384 else _varint(n), event,
                    _TAG_CANONICAL, _VARINTS[m] if m < 16384 else _varint(m), canonical))
    return out + _PERSONALIZATION_OFF if flags & fold.FLAG_NO_PERSONALIZATION else out


def _event_key(user: bytes, ts: int, seq: int) -> bytes:
    return user + SEP + _TS_SEQ.pack(ts, seq)


def _take_prefix(txn: lmdb.Transaction, db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """Delete every key starting with `prefix`; return the removed pairs."""
    removed = []
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return removed
    while True:
        key = cursor.key()
        if not key.startswith(prefix):
            break
        removed.append((key, cursor.value()))
        if not cursor.delete():
            break
    return removed


class LmdbProfileStore:
    """ProfileStore on one LMDB environment (see the module docstring for the layout)."""

    def __init__(
        self,
        path: str | Path,
        *,
        map_size_mb: int = 16_384,
        sync: bool = True,
        settings: fold.FoldSettings = fold.FoldSettings(),
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.env = lmdb.open(
            str(self.path), map_size=map_size_mb * 1024 * 1024, max_dbs=len(DB_NAMES) + 2, sync=sync,
            metasync=sync, readahead=False, max_readers=512,
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
        with self.env.begin(db=self.meta) as txn:
            cursor = txn.cursor()
            items = []
            if cursor.set_range(b"rfm:"):
                for key, value in cursor:
                    if not key.startswith(b"rfm:"):
                        break
                    items.append((key, value))
        return items

    def reload_rfm(self) -> None:
        """Reload the RFM population from LMDB: for a process that reads while another one (the
        writer process) writes, after it may have missed some of that process's changes."""
        sketch = RfmSketch()
        sketch.load(self._rfm_items())
        self.rfm = sketch  # one reference swap: concurrent readers see the old or the new one

    def close(self) -> None:
        self.env.close()

    # ------------------------------------------------------------------------------- helpers
    def _resolve(self, txn: lmdb.Transaction, user: bytes) -> bytes:
        target = txn.get(user, db=self.aliases)
        return target if target is not None else user

    def _load(self, txn: lmdb.Transaction, user: bytes) -> profile_pb2.StoredProfile | None:
        raw = txn.get(user, db=self.profiles)
        return None if raw is None else profile_pb2.StoredProfile.FromString(raw)

    def _write_rfm(self, txn: lmdb.Transaction,
                   changes: Iterable[tuple[tuple[int, int, float] | None, tuple[int, int, float] | None]]
                   ) -> dict[bytes, int]:
        deltas = self.rfm.pending(changes)
        meta = self.meta
        for key, delta in deltas.items():
            raw = txn.get(key, db=meta)
            value = (_I64.unpack(raw)[0] if raw else 0) + delta
            if value:
                txn.put(key, self.rfm.encode(value), db=self.meta)
            else:
                txn.delete(key, db=self.meta)
        return deltas

    def _write(self) -> lmdb.Transaction:
        return self.env.begin(write=True)

    def _seq_of(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(b"seq", db=self.meta)
        return _U64.unpack(raw)[0] if raw else 0

    def _commit(self, txn: lmdb.Transaction, deltas: dict[bytes, int] | None = None, seq: int | None = None) -> None:
        try:
            if seq is not None:
                txn.put(b"seq", _U64.pack(seq), db=self.meta)
            txn.commit()
        except lmdb.MapFullError as exc:
            txn.abort()
            raise ResourceExhausted(
                f"the profile store is full (map_size_mb too small for {self.path}); raise --map-size-mb"
            ) from exc
        except BaseException:
            txn.abort()
            raise
        if deltas:
            self.rfm.commit(deltas)
            if self.on_commit is not None:
                self.on_commit(deltas)

    def _event_at(self, txn: lmdb.Transaction, key: bytes, value: bytes) -> common_pb2.Event | None:
        """The event an `events` row stands for: its payload is in the log item of its seq (the
        key ends with it), or in the row itself for imported events (not on this shard's feed)."""
        if len(value) > 1:
            return common_pb2.Event.FromString(value[1:])
        raw = txn.get(key[-8:], db=self.log)
        return None if raw is None else profile_pb2.LoggedEvent.FromString(raw).event

    def _append_log(self, txn: lmdb.Transaction, seq: int, item: profile_pb2.LoggedEvent) -> None:
        txn.put(_SEQ.pack(seq), item.SerializeToString(), db=self.log, append=True)

    def _put_event(self, txn: lmdb.Transaction, user: bytes, event: common_pb2.Event, flags: int, seq: int) -> None:
        original = event.user_id
        event.user_id = ""
        try:
            payload = bytes((flags,)) + event.SerializeToString()
        finally:
            event.user_id = original
        txn.put(_event_key(user, event.timestamp_ms, seq), payload, db=self.events)

    # --------------------------------------------------------------------------------- reads
    def get(self, user_id: str) -> profile_pb2.StoredProfile | None:
        """The profile of `user_id` or of the id it is an alias of."""
        with self.env.begin() as txn:
            return self._load(txn, self._resolve(txn, user_id.encode()))

    def resolve(self, user_id: str) -> str:
        with self.env.begin() as txn:
            return self._resolve(txn, user_id.encode()).decode()

    def scan_profiles(self, start_after: str, limit: int) -> list[profile_pb2.StoredProfile]:
        out: list[profile_pb2.StoredProfile] = []
        start = start_after.encode()
        with self.env.begin(db=self.profiles) as txn:
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
        with self.env.begin(db=self.events) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(after_key):
                return out, None
            for key, value in cursor:
                if key == after_key:
                    continue
                last = key
                visited += 1
                sep = key.index(SEP)
                ts = _TS_SEQ.unpack_from(key, sep + 1)[0]
                if ts >= since_ms and (not until_ms or ts < until_ms):
                    event = self._event_at(txn, key, value)
                    if event is not None and (not types or event.type in types):
                        user = key[:sep].decode()
                        event.user_id = user
                        out.append(StoredEvent(user, value[0], event))
                if len(out) >= limit or visited >= limit * 8:
                    return out, last
        return out, None

    # ------------------------------------------------------------------------------ the feed
    def log_bounds(self) -> tuple[int, int]:
        """(log_start, head): the first seq the feed can still serve (older ones were trimmed
        by retention) and the last seq given out (0 for an empty log)."""
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(b"log_start")
            return (_U64.unpack(raw)[0] if raw else 1), self._seq_of(txn)

    def read_log(self, from_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, serialized LoggedEvent without seq) from `from_seq` on, in order."""
        out: list[tuple[int, bytes]] = []
        with self.env.begin(db=self.log) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_SEQ.pack(from_seq)):
                return out
            unpack = _SEQ.unpack
            for key, value in cursor:
                out.append((unpack(key)[0], value))
                if len(out) >= limit:
                    break
        return out

    def alias_target(self, user_id: str) -> str:
        """The id `user_id` is an alias of on this store ("" if none); reads no profile."""
        with self.env.begin(db=self.aliases) as txn:
            target = txn.get(user_id.encode())
        return target.decode() if target is not None else ""

    def own_events(self, user_id: str, limit: int = 0) -> list[StoredEvent]:
        """The log stored under exactly `user_id` (no alias following), oldest first."""
        with self.env.begin(db=self.events) as txn:
            events = self._user_events(txn, user_id.encode(), limit)
        return events

    def user_events(self, user_id: str) -> list[StoredEvent]:
        """The stored log of one profile (after aliases), oldest first."""
        with self.env.begin(db=self.events) as txn:
            user = self._resolve(txn, user_id.encode())
            return self._user_events(txn, user)

    def _user_events(self, txn: lmdb.Transaction, user: bytes, limit: int = 0) -> list[StoredEvent]:
        prefix = user + SEP
        out: list[StoredEvent] = []
        cursor = txn.cursor(db=self.events)
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                event = self._event_at(txn, key, value)
                if event is None:
                    continue
                event.user_id = user.decode()
                out.append(StoredEvent(user.decode(), value[0], event))
                if limit and len(out) >= limit:
                    break
        return out

    def export(self, user_id: str, now_ms: int) -> dict[str, Any]:
        """Everything stored about the user, JSON-ready."""
        with self.env.begin() as txn:
            user = self._resolve(txn, user_id.encode())
            state = self._load(txn, user)
            events = self._user_events(txn, user)
            rev = [k[len(user) + 1:].decode() for k, _ in self._prefix_items(txn, self.alias_rev, user + SEP)]
            idem = [(k[len(user) + 1:].decode(), _U32.unpack(v)[0])
                    for k, v in self._prefix_items(txn, self.idem, user + SEP)]
            own_alias = txn.get(user_id.encode(), db=self.aliases)
        if state is None and not events and not rev:
            raise NotFound(f"no profile for user_id {user_id!r}")
        options = {"preserving_proto_field_name": True}
        doc: dict[str, Any] = {
            "user_id": user.decode(),
            "requested_id": user_id,
            "exported_ms": now_ms,
            "profile": (json_format.MessageToDict(fold.public_view(state, now_ms, self.rfm.score), **options)
                        if state is not None else None),
            "stored_state": json_format.MessageToDict(state, **options) if state is not None else None,
            "aliases": sorted(rev),
            "alias_of": own_alias.decode() if own_alias else None,
            "events": [
                {**json_format.MessageToDict(e.event, **options),
                 "personalization_off": bool(e.flags & fold.FLAG_NO_PERSONALIZATION)}
                for e in events
            ],
            "idempotency_keys": [
                {"key": key, "created_s": created} for key, created in idem
            ],
        }
        json.dumps(doc)  # fail here, not in the servicer, if anything is not serializable
        return doc

    @staticmethod
    def _prefix_items(txn: lmdb.Transaction, db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
        cursor = txn.cursor(db=db)
        out = []
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                out.append((key, value))
        return out

    def count(self, db_name: str) -> int:
        with self.env.begin() as txn:
            return txn.stat(self.dbs[db_name])["entries"]

    # -------------------------------------------------------------------------------- writes
    def apply_events(self, events: Sequence[common_pb2.Event], now_ms: int) -> list[TrackResult]:
        """Fold validated events into their profiles, append them to the log and remember their
        event_ids, all in one transaction (group commit). Duplicates are skipped."""
        results: list[TrackResult] = []
        cache: dict[bytes, list[Any]] = {}
        resolved: dict[str, tuple[bytes, bytes, str]] = {}  # user_id -> (profile id, its key prefix, as str)
        created = _U32.pack(now_ms // 1000)
        settings = self.settings
        apply_event = fold.apply_event
        idem_db, events_db, log_db = self.idem, self.events, self.log
        pack, pack_seq = _TS_SEQ.pack, _SEQ.pack
        off = fold.FLAG_NO_PERSONALIZATION
        txn = self._write()
        put = txn.put
        try:
            seq = self._seq_of(txn)
            for event in events:
                uid = event.user_id
                names = resolved.get(uid)
                if names is None:
                    target = self._resolve(txn, uid.encode())
                    names = resolved[uid] = (target, target + SEP, target.decode())
                user, prefix, user_id = names
                # Remember the event id; an existing key (also one from this batch) is a duplicate.
                if not put(prefix + event.event_id.encode(), created, db=idem_db, overwrite=False):
                    results.append(TrackResult(False, user_id))
                    continue
                entry = cache.get(user)
                if entry is None:
                    loaded = self._load(txn, user)
                    state = fold.new_state(user_id) if loaded is None else loaded
                    # [state, RFM key before, flags]: consent does not change within a group commit
                    entry = [state, None if loaded is None else fold.rfm_key(loaded.profile),
                             0 if state.profile.consent.personalization else off]
                    cache[user] = entry
                state, _, flags = entry
                apply_event(state, event, flags, settings)
                seq += 1
                put(prefix + pack(event.timestamp_ms, seq), FLAG_BYTES[flags], db=events_db)
                put(pack_seq(seq), logged_event_bytes(event.SerializeToString(), user, flags), db=log_db,
                    append=True)
                results.append(TrackResult(True, user_id, seq))
            changes = []
            for user, (state, old, _) in cache.items():
                txn.put(user, state.SerializeToString(), db=self.profiles)
                changes.append((old, fold.rfm_key(state.profile)))
            deltas = self._write_rfm(txn, changes)
        except BaseException:
            txn.abort()
            raise
        self._commit(txn, deltas, seq)
        return results

    def identify(self, anonymous_id: str, customer_id: str, traits: dict[str, str],
                 now_ms: int) -> profile_pb2.StoredProfile:
        """Merge the anonymous profile into the customer's, leave an alias anonymous -> customer."""
        anon = anonymous_id.encode()
        txn = self._write()
        try:
            seq = self._seq_of(txn)
            target = self._resolve(txn, customer_id.encode())
            anon_alias = txn.get(anon, db=self.aliases)
            if anon_alias is not None and anon_alias != target:
                raise FailedPrecondition(
                    f"anonymous_id {anonymous_id!r} is already merged into {anon_alias.decode()!r}, "
                    f"not {customer_id!r}"
                )
            customer = self._load(txn, target)
            old_customer = fold.rfm_key(customer.profile) if customer else None
            if customer is None:
                customer = fold.new_state(target.decode())
            changes: list[Any] = []
            linked = False
            if anon != target:
                anonymous = self._load(txn, anon) if anon_alias is None else None
                if anonymous is not None:
                    fold.merge_into(customer, anonymous, self.settings)
                    txn.delete(anon, db=self.profiles)
                    changes.append((fold.rfm_key(anonymous.profile), None))
                    self._move_user_keys(txn, anon, target)
                linked = self._point_alias(txn, anon, target, customer)
            p = customer.profile
            first_registration = not p.registered
            if linked or first_registration:  # a repeated Identify is no news for the feed
                seq += 1
                item = profile_pb2.LoggedEvent(canonical_user_id=target.decode(), identity=profile_pb2.Identity(
                    anonymous_id=anonymous_id, customer_id=target.decode(), identified_ms=now_ms,
                    first_registration=first_registration))
                self._append_log(txn, seq, item)
                txn.put(target + SEP + _SEQ.pack(seq), b"", db=self.log_ids)
            p.registered = True
            if not p.customer_id:
                p.customer_id = target.decode()
            if traits:
                merged = dict(p.traits)
                merged.update(traits)
                if len(merged) > C.MAX_TRAITS:
                    raise InvalidArgument(f"traits: the profile would have {len(merged)} traits; "
                                          f"at most {C.MAX_TRAITS} are allowed")
                p.traits.update(traits)
            txn.put(target, customer.SerializeToString(), db=self.profiles)
            changes.append((old_customer, fold.rfm_key(p)))
            deltas = self._write_rfm(txn, changes)
        except BaseException:
            txn.abort()
            raise
        self._commit(txn, deltas, seq)
        return customer

    def _move_user_keys(self, txn: lmdb.Transaction, source: bytes, target: bytes) -> None:
        """Re-key the event log, idempotency keys and incoming aliases of `source` under `target`."""
        src, dst = source + SEP, target + SEP
        for key, value in _take_prefix(txn, self.events, src):
            txn.put(dst + key[len(src):], value, db=self.events)
        for key, value in _take_prefix(txn, self.idem, src):
            txn.put(dst + key[len(src):], value, db=self.idem, overwrite=False)
        for key, value in _take_prefix(txn, self.log_ids, src):
            txn.put(dst + key[len(src):], value, db=self.log_ids)
        for key, _ in _take_prefix(txn, self.alias_rev, src):
            alias = key[len(src):]
            if alias != target:
                txn.put(alias, target, db=self.aliases)
                txn.put(dst + alias, b"", db=self.alias_rev)
            else:
                txn.delete(alias, db=self.aliases)

    def _point_alias(self, txn: lmdb.Transaction, alias: bytes, target: bytes,
                     target_state: profile_pb2.StoredProfile | None) -> bool:
        old = txn.get(alias, db=self.aliases)
        if old == target:
            created = False
        else:
            if old is not None:
                txn.delete(old + SEP + alias, db=self.alias_rev)
            txn.put(alias, target, db=self.aliases)
            txn.put(target + SEP + alias, b"", db=self.alias_rev)
            created = True
        if target_state is not None:
            name = alias.decode()
            if name not in target_state.profile.aliases:
                target_state.profile.aliases.append(name)
                del target_state.profile.aliases[: -C.MAX_ALIASES]
        return created

    def set_consent(self, user_id: str, consent: common_pb2.Consent, now_ms: int) -> profile_pb2.StoredProfile:
        """Store the consent decision (creating the profile if needed). An older decision than the
        stored one (by updated_ms) is ignored. Withdrawing personalization forgets the behavioural
        signals (recently viewed, searches, affinity)."""
        txn = self._write()
        try:
            user = self._resolve(txn, user_id.encode())
            state = self._load(txn, user) or fold.new_state(user.decode())
            updated = consent.updated_ms or now_ms
            current = state.profile.consent
            if updated >= current.updated_ms:
                was_on = current.personalization
                current.CopyFrom(consent)
                current.updated_ms = updated
                if was_on and not consent.personalization:
                    fold.clear_behaviour(state)
                txn.put(user, state.SerializeToString(), db=self.profiles)
        except BaseException:
            txn.abort()
            raise
        self._commit(txn)
        return state

    def delete(self, user_id: str, now_ms: int = 0) -> DeleteResult:
        """Erase a profile with its event log, idempotency keys and the aliases pointing to it.
        A profile stored under `user_id` itself is erased; otherwise the one it is an alias of.
        Its items in the feed log are redacted (deleted) and an Erasure item is appended."""
        txn = self._write()
        try:
            seq = self._seq_of(txn)
            own = user_id.encode()
            user = own if txn.get(own, db=self.profiles) is not None else self._resolve(txn, own)
            state = self._load(txn, user)
            if state is not None:
                txn.delete(user, db=self.profiles)
            prefix = user + SEP
            removed = _take_prefix(txn, self.events, prefix)
            for key, _ in removed:
                txn.delete(key[-8:], db=self.log)  # the event key ends with its seq
            for key, _ in _take_prefix(txn, self.log_ids, prefix):
                txn.delete(key[len(prefix):], db=self.log)
            events = len(removed)
            _take_prefix(txn, self.idem, prefix)
            aliases: list[str] = []
            for key, _ in _take_prefix(txn, self.alias_rev, prefix):
                alias = key[len(prefix):]
                if txn.get(alias, db=self.aliases) == user:
                    txn.delete(alias, db=self.aliases)
                    aliases.append(alias.decode())
            deleted = state is not None or events > 0 or bool(aliases)
            if deleted:
                seq += 1
                self._append_log(txn, seq, profile_pb2.LoggedEvent(
                    canonical_user_id=user.decode(),
                    erasure=profile_pb2.Erasure(user_id=user.decode(), aliases=sorted(aliases), erased_ms=now_ms)))
            deltas = self._write_rfm(txn, [(fold.rfm_key(state.profile), None)]) if state is not None else {}
        except BaseException:
            txn.abort()
            raise
        self._commit(txn, deltas, seq)
        return DeleteResult(deleted, events, len(aliases))

    def import_profile(self, profile: common_pb2.Profile, events: Sequence[common_pb2.Event],
                       now_ms: int) -> profile_pb2.StoredProfile:
        """Merge a profile read elsewhere (another shard) into the one stored under profile.user_id,
        and keep its event log. The same request twice changes nothing the second time."""
        digest = hashlib.sha256(profile.SerializeToString(deterministic=True))
        for event in events:
            digest.update(event.SerializeToString(deterministic=True))
        marker_id = IMPORT_MARKER + digest.hexdigest()[:32].encode()
        created = _U32.pack(now_ms // 1000)
        txn = self._write()
        try:
            seq = self._seq_of(txn)
            user = self._resolve(txn, profile.user_id.encode())
            marker = user + SEP + marker_id
            state = self._load(txn, user)
            if txn.get(marker, db=self.idem) is not None and state is not None:
                txn.abort()
                return state
            old = fold.rfm_key(state.profile) if state is not None else None
            if state is None:
                state = fold.new_state(user.decode())
            other = profile_pb2.StoredProfile()
            other.profile.CopyFrom(profile)
            other.profile.user_id = user.decode()
            del other.profile.event_counts[:]
            # View counts are stored beside the list, not in the stored Profile (as public_view shows them).
            other.recently_viewed_counts.extend(profile.recently_viewed_counts)
            del other.profile.recently_viewed_counts[:]
            other.first_context_ms = profile.first_seen_ms
            other.last_context_ms = profile.last_seen_ms
            totals = [0] * fold.N_TYPES
            if profile.event_counts:
                for row in profile.event_counts:
                    if 0 < row.type < fold.N_TYPES:
                        totals[row.type] += row.total
            else:
                for row in profile.daily_events:
                    if 0 < row.type < fold.N_TYPES:
                        totals[row.type] += row.count
            other.type_totals.extend(totals)
            # The imported map holds shares; scale them to the stored profile's magnitude.
            if other.profile.category_affinity and state.profile.category_affinity:
                scale = sum(state.profile.category_affinity.values())
                for key in list(other.profile.category_affinity):
                    other.profile.category_affinity[key] *= scale
            fold.merge_into(state, other, self.settings)
            if profile.registered:
                state.profile.registered = True
                if not state.profile.customer_id:
                    state.profile.customer_id = profile.customer_id or user.decode()
            for event in events:
                ikey = user + SEP + event.event_id.encode()
                if txn.get(ikey, db=self.idem) is not None:
                    continue
                seq += 1
                self._put_event(txn, user, event, 0, seq)
                txn.put(ikey, created, db=self.idem)
            txn.put(marker, created, db=self.idem)
            txn.put(user, state.SerializeToString(), db=self.profiles)
            deltas = self._write_rfm(txn, [(old, fold.rfm_key(state.profile))])
        except BaseException:
            txn.abort()
            raise
        self._commit(txn, deltas, seq)
        return state

    def put_alias(self, alias_id: str, target_id: str) -> bool:
        """Make alias_id point to target_id (or to what target_id is an alias of). Aliases that
        pointed to alias_id follow, so there are no chains. Returns False if it already did."""
        alias = alias_id.encode()
        txn = self._write()
        try:
            target = self._resolve(txn, target_id.encode())
            if target == alias:
                raise FailedPrecondition(f"{target_id!r} is an alias of {alias_id!r}; an alias cycle is not allowed")
            state = self._load(txn, target)
            before = None if state is None else state.SerializeToString()
            created = self._point_alias(txn, alias, target, state)
            src = alias + SEP
            for key, _ in _take_prefix(txn, self.alias_rev, src):
                self._point_alias(txn, key[len(src):], target, state)
            if state is not None and state.SerializeToString() != before:
                txn.put(target, state.SerializeToString(), db=self.profiles)
        except BaseException:
            txn.abort()
            raise
        self._commit(txn)
        return created

    def purge_events(self, cutoff_ms: int, start_key: bytes, max_keys: int) -> tuple[int, bytes | None]:
        """Delete events older than cutoff_ms, visiting at most max_keys keys from start_key; each
        user's log is in time order, so the scan jumps to the next user at the first young event.
        Returns (deleted, key to resume from or None when done)."""
        deleted = 0
        txn = self._write()
        try:
            cursor = txn.cursor(db=self.events)
            positioned = cursor.set_range(start_key)
            visited = 0
            while positioned and visited < max_keys:
                key = cursor.key()
                if not key:
                    positioned = False
                    break
                visited += 1
                sep = key.index(SEP)
                ts = _TS_SEQ.unpack_from(key, sep + 1)[0]
                if ts < cutoff_ms:
                    deleted += 1
                    txn.delete(key[-8:], db=self.log)  # its feed item goes with it
                    positioned = cursor.delete() and bool(cursor.key())
                else:
                    positioned = cursor.set_range(key[:sep] + b"\x01")
            resume = cursor.key() if positioned else None
        except BaseException:
            txn.abort()
            raise
        self._commit(txn)
        return deleted, resume or None

    def trim_log(self, cutoff_ms: int, max_keys: int) -> tuple[int, bool]:
        """Delete feed items older than cutoff_ms from the head of the log, at most max_keys per
        call, stopping at the first younger item; `log_start` moves past what was trimmed.
        (Old events further on are deleted with the events themselves, by purge_events.)
        Returns (deleted, done)."""
        deleted = 0
        done = False
        txn = self._write()
        try:
            cursor = txn.cursor(db=self.log)
            start = None
            positioned = cursor.first()
            while True:
                if not positioned:
                    done = True
                    break
                if deleted >= max_keys:
                    break
                item = profile_pb2.LoggedEvent.FromString(cursor.value())
                kind = item.WhichOneof("item")
                at = (item.event.timestamp_ms if kind == "event" else item.erasure.erased_ms if kind == "erasure"
                      else item.identity.identified_ms)
                if at >= cutoff_ms:
                    done = True
                    break
                start = _SEQ.unpack(cursor.key())[0] + 1
                deleted += 1
                positioned = cursor.delete() and bool(cursor.key())
            if start is not None:
                txn.put(b"log_start", _U64.pack(start), db=self.meta)
        except BaseException:
            txn.abort()
            raise
        self._commit(txn)
        return deleted, done

    def expire_idempotency(self, cutoff_s: int, start_key: bytes, max_keys: int) -> tuple[int, bytes | None]:
        """Forget event_ids remembered before cutoff_s (Unix seconds), max_keys keys per call."""
        deleted = 0
        txn = self._write()
        try:
            cursor = txn.cursor(db=self.idem)
            positioned = cursor.set_range(start_key)
            visited = 0
            while positioned and visited < max_keys:
                visited += 1
                if _U32.unpack(cursor.value())[0] < cutoff_s:
                    deleted += 1
                    positioned = cursor.delete() and bool(cursor.key())
                else:
                    positioned = cursor.next()
            resume = cursor.key() if positioned else None
        except BaseException:
            txn.abort()
            raise
        self._commit(txn)
        return deleted, resume or None
