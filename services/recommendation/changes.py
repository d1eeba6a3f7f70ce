"""The catalog-change log behind `FollowCatalog`: every stock and price change, with a sequence number.

Changes live in the catalog's own LMDB environment, in the named database `CHANGES_DB`, and are
written in the same write transaction as the products they describe: a change is in the log if and
only if the catalog holds it, so a crash can neither lose one nor invent one. Keys are the sequence
number (8 bytes big-endian, so LMDB's key order is seq order), values serialized `CatalogChange`s.
Sequence numbers start at 1 and have no gaps; the oldest are pruned beyond `MAX_KEPT_CHANGES`.

`ChangeFeed` is the live side: the writer calls `published(seq)` on the event loop after a commit,
and followers wait for a sequence number instead of polling.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Sequence

import lmdb

from services.common.errors import VitrineError
from services.recommendation.config import FOLLOW_READ_BATCH, MAX_KEPT_CHANGES
from services.recommendation.metrics import CATALOG_CHANGES, CATALOG_FEED_ITEMS, CATALOG_FOLLOWERS
from vitrine.v1 import common_pb2, recommend_pb2

CHANGES_DB = b"catalog changes"   # contains a space: can never be a product id in the main database
_SEQ = struct.Struct(">q")


class OutOfRange(VitrineError):
    code_name = "OUT_OF_RANGE"


def encode_seq(seq: int) -> bytes:
    return _SEQ.pack(seq)


def decode_seq(key: bytes | memoryview) -> int:
    return int(_SEQ.unpack(key)[0])


def change_of(previous: common_pb2.Product | None, product: common_pb2.Product,
              changed_ms: int) -> recommend_pb2.CatalogChange | None:
    """The change `product` makes to `previous` (None = a new product), or None when neither its
    stock nor its price moved (a title edit is no catalog change for the feed)."""
    if previous is not None and previous.stock == product.stock and previous.price == product.price:
        return None
    return recommend_pb2.CatalogChange(
        product_id=product.product_id, stock=product.stock, price=product.price,
        previous_stock=previous.stock if previous is not None else 0,
        previous_price=previous.price if previous is not None else 0.0,
        changed_ms=changed_ms, created=previous is None)


class ChangeLog:
    """Appends and reads the change log inside the catalog's environment (blocking calls)."""

    def __init__(self, env: lmdb.Environment, *, keep: int = MAX_KEPT_CHANGES) -> None:
        self.env = env
        self.db = env.open_db(CHANGES_DB)
        self.keep = keep

    def bounds(self) -> tuple[int, int]:
        """(first, last) sequence numbers kept; (last + 1, last) when empty, (1, 0) before any."""
        with self.env.begin(db=self.db) as txn:
            cursor = txn.cursor()
            if not cursor.last():
                return 1, 0
            last = decode_seq(cursor.key())
            cursor.first()
            return decode_seq(cursor.key()), last

    def append(self, txn: lmdb.Transaction, changes: Sequence[recommend_pb2.CatalogChange]) -> None:
        """Number `changes` after the last kept one and write them in the caller's write transaction
        (setting their `seq`), then prune the oldest beyond `keep`."""
        if not changes:
            return
        cursor = txn.cursor(db=self.db)
        seq = decode_seq(cursor.key()) if cursor.last() else 0
        for change in changes:
            seq += 1
            change.seq = seq
            txn.put(encode_seq(seq), change.SerializeToString(), db=self.db, append=True)
        if cursor.first():
            excess = seq - decode_seq(cursor.key()) + 1 - self.keep
            while excess > 0 and cursor.delete():   # delete() moves the cursor to the next key
                excess -= 1

    def read(self, from_seq: int, limit: int) -> list[recommend_pb2.CatalogChange]:
        """Up to `limit` changes with seq >= from_seq, in order."""
        out: list[recommend_pb2.CatalogChange] = []
        with self.env.begin(db=self.db, buffers=True) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(encode_seq(max(from_seq, 0))):
                return out
            for _key, value in cursor:
                change = recommend_pb2.CatalogChange()
                change.ParseFromString(bytes(value))
                out.append(change)
                if len(out) >= limit:
                    break
        return out


class ChangeFeed:
    """Wakes followers when a change is committed (event loop only)."""

    def __init__(self) -> None:
        self.last_seq = 0
        self._condition = asyncio.Condition()

    async def published(self, last_seq: int) -> None:
        """Called after the commit of the changes up to `last_seq`."""
        if last_seq <= self.last_seq:
            return
        CATALOG_CHANGES.inc(last_seq - self.last_seq)
        async with self._condition:
            self.last_seq = last_seq
            self._condition.notify_all()

    async def wait_beyond(self, seq: int) -> None:
        """Return once a change with a sequence number above `seq` is committed."""
        async with self._condition:
            await self._condition.wait_for(lambda: self.last_seq > seq)


async def follow(log: ChangeLog, feed: ChangeFeed, from_seq: int,
                 batch: int = FOLLOW_READ_BATCH) -> AsyncIterator[recommend_pb2.CatalogChange]:
    """Every change with seq >= from_seq (0 = the oldest kept) exactly once, in order, then each new
    one as it is committed. A cursor beyond the end (another data directory) or before the oldest
    kept change (pruned: the follower would miss changes) is OUT_OF_RANGE, never silently skipped."""
    if from_seq < 0:
        raise OutOfRange(f"from_seq must be >= 0 (0 = the oldest kept change), got {from_seq}")
    # reads run on the event loop: a batch is ~0.5 ms of memory-mapped reads, and no worker thread
    # can then be inside the environment when the service closes it at stop
    first, last = log.bounds()
    if from_seq > last + 1:
        raise OutOfRange(f"from_seq {from_seq} is beyond the end of the catalog feed (last seq {last}); "
                         "the cursor belongs to another data directory: follow from 0")
    cursor = from_seq or first
    if cursor < first:
        raise OutOfRange(f"changes before seq {first} were pruned (the newest {log.keep} are kept); "
                         f"follow from {first} or 0 and reconcile stock from the catalog")
    CATALOG_FOLLOWERS.inc()
    try:
        while True:
            changes = log.read(cursor, batch)
            if not changes:
                await feed.wait_beyond(cursor - 1)
                continue
            if changes[0].seq != cursor:
                raise OutOfRange(f"changes from seq {cursor} were pruned while this follower was behind; "
                                 f"follow again from {changes[0].seq} or 0")
            for change in changes:
                yield change
            CATALOG_FEED_ITEMS.inc(len(changes))
            cursor = changes[-1].seq + 1
    finally:
        CATALOG_FOLLOWERS.dec()
