"""Right to erasure and data portability: DeleteProfile and ExportProfile."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from services.common.errors import NotFound
from services.profile import fold
from services.profile.keys import SEP, U32, prefix_items, read_txn, seq_of_event_key, take_prefix
from services.profile.transaction import write_transaction
from vitrine.v1 import profile_pb2

if TYPE_CHECKING:
    from services.profile.store import LmdbProfileStore


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    deleted: bool
    events_deleted: int
    aliases_deleted: int


def delete(store: LmdbProfileStore, user_id: str, now_ms: int = 0) -> DeleteResult:
    """Erase a profile with its event index, idempotency keys and the aliases pointing to it.
    A profile stored under `user_id` itself is erased; otherwise the one it is an alias of.
    Its items in the feed log are redacted (deleted) and an Erasure item is appended, in the
    same transaction: a consumer replaying the feed later finds only the Erasure."""
    with write_transaction(store) as w:
        txn = w.txn
        own = user_id.encode()
        user = own if txn.get(own, db=store.profiles) is not None else store.resolve_in(txn, own)
        state = store.load_in(txn, user)
        if state is not None:
            txn.delete(user, db=store.profiles)
        prefix = user + SEP
        removed = take_prefix(txn, store.events, prefix)
        for key, _ in removed:
            txn.delete(seq_of_event_key(key), db=store.log)
        for key, _ in take_prefix(txn, store.log_ids, prefix):
            txn.delete(key[len(prefix):], db=store.log)
        take_prefix(txn, store.idem, prefix)
        aliases: list[str] = []
        for key, _ in take_prefix(txn, store.alias_rev, prefix):
            alias = key[len(prefix):]
            if txn.get(alias, db=store.aliases) == user:
                txn.delete(alias, db=store.aliases)
                aliases.append(alias.decode())
        deleted = state is not None or bool(removed) or bool(aliases)
        if deleted:
            w.append_log(profile_pb2.LoggedEvent(
                canonical_user_id=user.decode(),
                erasure=profile_pb2.Erasure(user_id=user.decode(), aliases=sorted(aliases), erased_ms=now_ms)))
        if state is not None:
            w.rfm([(fold.rfm_key(state.profile), None)])
    return DeleteResult(deleted, len(removed), len(aliases))


def export(store: LmdbProfileStore, user_id: str, now_ms: int) -> dict[str, Any]:
    """Everything stored about the user, JSON-ready."""
    with read_txn(store.env) as txn:
        user = store.resolve_in(txn, user_id.encode())
        state = store.load_in(txn, user)
        events = store.events_in(txn, user)
        prefix = user + SEP
        rev = [k[len(prefix):].decode() for k, _ in prefix_items(txn, store.alias_rev, prefix)]
        idem = [(k[len(prefix):].decode(), U32.unpack(v)[0]) for k, v in prefix_items(txn, store.idem, prefix)]
        own_alias = txn.get(user_id.encode(), db=store.aliases)
    if state is None and not events and not rev:
        raise NotFound(f"no profile for user_id {user_id!r}")
    options: dict[str, Any] = {"preserving_proto_field_name": True}
    doc: dict[str, Any] = {
        "user_id": user.decode(),
        "requested_id": user_id,
        "exported_ms": now_ms,
        "profile": (json_format.MessageToDict(fold.public_view(state, now_ms, store.rfm.score), **options)
                    if state is not None else None),
        "stored_state": json_format.MessageToDict(state, **options) if state is not None else None,
        "aliases": sorted(rev),
        "alias_of": own_alias.decode() if own_alias else None,
        "events": [
            {**json_format.MessageToDict(e.event, **options),
             "personalization_off": bool(e.flags & fold.FLAG_NO_PERSONALIZATION)}
            for e in events
        ],
        "idempotency_keys": [{"key": key, "created_s": created} for key, created in idem],
    }
    json.dumps(doc)  # fail here, not in the servicer, if anything is not serializable
    return doc
