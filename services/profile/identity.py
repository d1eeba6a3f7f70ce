"""Who a shopper is: Identify (merge an anonymous profile into the customer's), aliases, and
ImportProfile (a profile moved from another shard). Storage side only; the merge, trait and
registration rules are in fold.py."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from services.common.errors import FailedPrecondition
from services.profile import config as C
from services.profile import fold
from services.profile.keys import IMPORT_MARKER, SEP, SEQ, U32, event_key, take_prefix
from services.profile.transaction import WriteTxn, write_transaction
from vitrine.v1 import common_pb2, profile_pb2

if TYPE_CHECKING:
    from services.profile.store import LmdbProfileStore


def identify(store: LmdbProfileStore, anonymous_id: str, customer_id: str, traits: Mapping[str, str],
             now_ms: int) -> profile_pb2.StoredProfile:
    """Merge the anonymous profile into the customer's, leave an alias anonymous -> customer, and
    put an Identity item on the feed when that linked the ids or first registered the customer."""
    anon = anonymous_id.encode()
    with write_transaction(store) as w:
        txn = w.txn
        target = store.resolve_in(txn, customer_id.encode())
        anon_alias = txn.get(anon, db=store.aliases)
        if anon_alias is not None and anon_alias != target:
            raise FailedPrecondition(
                f"anonymous_id {anonymous_id!r} is already merged into {anon_alias.decode()!r}, not {customer_id!r}"
            )
        loaded = store.load_in(txn, target)
        old_customer = fold.rfm_key(loaded.profile) if loaded else None
        customer = loaded if loaded is not None else fold.new_state(target.decode())
        changes: list[Any] = []
        linked = False
        if anon != target:
            anonymous = store.load_in(txn, anon) if anon_alias is None else None
            if anonymous is not None:
                fold.merge_into(customer, anonymous, store.settings)
                txn.delete(anon, db=store.profiles)
                changes.append((fold.rfm_key(anonymous.profile), None))
                move_user_keys(store, w, anon, target)
            linked = point_alias(store, w, anon, target, customer)
        p = customer.profile
        first_registration = fold.register(p, target.decode())
        fold.set_traits(p, traits)
        if linked or first_registration:  # a repeated Identify is no news for the feed
            seq = w.append_log(profile_pb2.LoggedEvent(
                canonical_user_id=target.decode(),
                identity=profile_pb2.Identity(anonymous_id=anonymous_id, customer_id=target.decode(),
                                              identified_ms=now_ms, first_registration=first_registration)))
            txn.put(target + SEP + SEQ.pack(seq), b"", db=store.log_ids)  # found again by an erasure
        txn.put(target, customer.SerializeToString(), db=store.profiles)
        changes.append((old_customer, fold.rfm_key(p)))
        w.rfm(changes)
    return customer


def move_user_keys(store: LmdbProfileStore, w: WriteTxn, source: bytes, target: bytes) -> None:
    """Re-key the event index, idempotency keys, feed item index and incoming aliases of `source`
    under `target` (the seqs in the keys stay: the log items are where they were)."""
    txn = w.txn
    src, dst = source + SEP, target + SEP
    for key, value in take_prefix(txn, store.events, src):
        txn.put(dst + key[len(src):], value, db=store.events)
    for key, value in take_prefix(txn, store.idem, src):
        txn.put(dst + key[len(src):], value, db=store.idem, overwrite=False)
    for key, value in take_prefix(txn, store.log_ids, src):
        txn.put(dst + key[len(src):], value, db=store.log_ids)
    for key, _ in take_prefix(txn, store.alias_rev, src):
        alias = key[len(src):]
        if alias != target:
            txn.put(alias, target, db=store.aliases)
            txn.put(dst + alias, b"", db=store.alias_rev)
        else:
            txn.delete(alias, db=store.aliases)


def point_alias(store: LmdbProfileStore, w: WriteTxn, alias: bytes, target: bytes,
                target_state: profile_pb2.StoredProfile | None) -> bool:
    """Make `alias` point to `target` (both directions of the alias table); list it in the
    target's profile. Returns False if it already pointed there."""
    txn = w.txn
    old = txn.get(alias, db=store.aliases)
    if old == target:
        created = False
    else:
        if old is not None:
            txn.delete(old + SEP + alias, db=store.alias_rev)
        txn.put(alias, target, db=store.aliases)
        txn.put(target + SEP + alias, b"", db=store.alias_rev)
        created = True
    if target_state is not None:
        name = alias.decode()
        if name not in target_state.profile.aliases:
            target_state.profile.aliases.append(name)
            del target_state.profile.aliases[: -C.MAX_ALIASES]
    return created


def put_alias(store: LmdbProfileStore, alias_id: str, target_id: str) -> bool:
    """Make alias_id point to target_id (or to what target_id is an alias of). Aliases that
    pointed to alias_id follow, so there are no chains. Returns False if it already did."""
    alias = alias_id.encode()
    with write_transaction(store) as w:
        txn = w.txn
        target = store.resolve_in(txn, target_id.encode())
        if target == alias:
            raise FailedPrecondition(f"{target_id!r} is an alias of {alias_id!r}; an alias cycle is not allowed")
        state = store.load_in(txn, target)
        before = None if state is None else state.SerializeToString()
        created = point_alias(store, w, alias, target, state)
        src = alias + SEP
        for key, _ in take_prefix(txn, store.alias_rev, src):
            point_alias(store, w, key[len(src):], target, state)
        if state is not None and state.SerializeToString() != before:
            txn.put(target, state.SerializeToString(), db=store.profiles)
    return created


def import_profile(store: LmdbProfileStore, profile: common_pb2.Profile, events: Sequence[common_pb2.Event],
                   now_ms: int) -> profile_pb2.StoredProfile:
    """Merge a profile read elsewhere (another shard) into the one stored under profile.user_id,
    and keep its event log (payloads in the index rows: these events are not on this shard's
    feed). The same request twice changes nothing the second time."""
    digest = hashlib.sha256(profile.SerializeToString(deterministic=True))
    for event in events:
        digest.update(event.SerializeToString(deterministic=True))
    marker_id = IMPORT_MARKER + digest.hexdigest()[:32].encode()
    created = U32.pack(now_ms // 1000)
    with write_transaction(store) as w:
        txn = w.txn
        user = store.resolve_in(txn, profile.user_id.encode())
        marker = user + SEP + marker_id
        loaded = store.load_in(txn, user)
        if txn.get(marker, db=store.idem) is not None and loaded is not None:
            w.discard()
            return loaded
        old = fold.rfm_key(loaded.profile) if loaded is not None else None
        state = loaded if loaded is not None else fold.new_state(user.decode())
        fold.merge_into(state, fold.imported_state(profile, user.decode(), state), store.settings)
        if profile.registered:
            fold.register(state.profile, profile.customer_id or user.decode())
        for event in events:
            ikey = user + SEP + event.event_id.encode()
            if txn.get(ikey, db=store.idem) is not None:
                continue
            stored = common_pb2.Event()
            stored.CopyFrom(event)
            stored.user_id = ""  # the key names the user
            txn.put(event_key(user, event.timestamp_ms, w.next_seq()), b"\x00" + stored.SerializeToString(),
                    db=store.events)
            txn.put(ikey, created, db=store.idem)
        txn.put(marker, created, db=store.idem)
        txn.put(user, state.SerializeToString(), db=store.profiles)
        w.rfm([(old, fold.rfm_key(state.profile))])
    return state
