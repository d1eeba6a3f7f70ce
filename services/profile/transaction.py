"""One write transaction of the profile store, as a context manager.

    with write_transaction(store) as w:
        ...  w.txn.put(...), w.next_seq(), w.append_log(item), w.rfm(changes)

On leaving the block the transaction commits (fsync unless the store was opened with
sync=False) together with the `seq` counter it advanced; an exception aborts it and nothing
changes; `w.discard()` aborts it on purpose (a no-op write). A full map becomes
RESOURCE_EXHAUSTED. Only after a durable commit are the RFM deltas applied to the in-memory
population and handed to `store.on_commit` (the writer process forwards them).

The counters a transaction changes (`seq`, the RFM buckets) are read from the transaction
itself, never from memory, so two processes writing one environment in turn stay correct.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import lmdb

from services.common.errors import ResourceExhausted
from services.profile.keys import I64, META_SEQ, SEQ, U64, as_txn
from vitrine.v1 import profile_pb2

if TYPE_CHECKING:
    from services.profile.store import LmdbProfileStore

RfmKey = tuple[int, int, float]


class WriteTxn:
    """The LMDB write transaction and what its commit publishes (seq counter, RFM deltas)."""

    def __init__(self, store: LmdbProfileStore, txn: lmdb.Transaction) -> None:
        self.store = store
        self.txn = as_txn(txn)
        raw = txn.get(META_SEQ, db=store.meta)
        self.first_seq = self.seq = U64.unpack(raw)[0] if raw else 0
        self.deltas: dict[bytes, int] = {}
        self.discarded = False

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def append_log(self, item: profile_pb2.LoggedEvent) -> int:
        """Append a feed item at the next seq; returns the seq."""
        seq = self.next_seq()
        self.txn.put(SEQ.pack(seq), item.SerializeToString(), db=self.store.log, append=True)
        return seq

    def rfm(self, changes: Iterable[tuple[RfmKey | None, RfmKey | None]]) -> None:
        """Move profiles between RFM buckets: (old key, new key) pairs, None = not a buyer."""
        rfm, meta, txn = self.store.rfm, self.store.meta, self.txn
        for key, delta in rfm.pending(changes).items():
            raw = txn.get(key, db=meta)
            value = (I64.unpack(raw)[0] if raw else 0) + delta
            if value:
                txn.put(key, rfm.encode(value), db=meta)
            else:
                txn.delete(key, db=meta)
            total = self.deltas.get(key, 0) + delta
            if total:
                self.deltas[key] = total
            else:
                self.deltas.pop(key, None)

    def discard(self) -> None:
        """Abort instead of committing when the block ends (nothing to write)."""
        self.discarded = True


def _full(store: LmdbProfileStore) -> ResourceExhausted:
    return ResourceExhausted(f"the profile store is full (map_size_mb too small for {store.path}); "
                             "raise --map-size-mb")


@contextlib.contextmanager
def _aborted_on_error(store: LmdbProfileStore, txn: lmdb.Transaction) -> Iterator[None]:
    """Any error aborts `txn`; a put or commit that did not fit is RESOURCE_EXHAUSTED."""
    try:
        yield
    except lmdb.MapFullError as exc:
        txn.abort()
        raise _full(store) from exc
    except BaseException:
        txn.abort()
        raise


@contextlib.contextmanager
def write_transaction(store: LmdbProfileStore) -> Iterator[WriteTxn]:
    txn = store.env.begin(write=True)
    w = WriteTxn(store, txn)
    with _aborted_on_error(store, txn):
        yield w
    if w.discarded:
        txn.abort()
        return
    with _aborted_on_error(store, txn):
        if w.seq != w.first_seq:
            txn.put(META_SEQ, U64.pack(w.seq), db=store.meta)
        txn.commit()
    if w.deltas:
        store.rfm.commit(w.deltas)
        if store.on_commit is not None:
            store.on_commit(w.deltas)
