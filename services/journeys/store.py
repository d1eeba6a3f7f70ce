"""Journey storage on LMDB: definitions, shopper states, durable timers, watches, the outbox.

One environment under `<data_dir>/journeys/` with named databases (user ids and journey ids
never contain control characters, so 0x00 separates key parts and prefixes are exact):

| db         | key                                   | value                                      |
|------------|---------------------------------------|--------------------------------------------|
| `meta`     | `cursor:events[:shard]`, `cursor:catalog` | next seq wanted (8, LE, as LmdbCursor) |
| `journeys` | journey_id                            | Journey (protobuf)                         |
| `states`   | user 0x00 journey_id                  | JourneyState (JSON)                        |
| `timers`   | due_ms(8, BE) user 0x00 journey_id    | empty: ordered by due time                 |
| `watches`  | product 0x00 journey_id 0x00 user     | Watch (JSON)                               |
| `uwatch`   | user 0x00 journey_id 0x00 product     | empty: a shopper's watches, for erasure    |
| `products` | product_id                            | stock(4, BE signed) price(8, double)       |
| `messages` | message_id                            | Message (protobuf)                         |
| `delivery` | message_id                            | Delivery (JSON): visibility, attempts, ... |
| `ready`    | visible_ms(8, BE) message_id          | empty: messages to deliver, by time        |
| `umsg`     | user 0x00 created_ms(8, BE) message_id| empty: a shopper's messages                |
| `caps`     | user                                  | send times in the cap window (JSON)        |
| `engaged`  | user                                  | last opened/clicked message id             |
| `stats`    | journey_id 0x00 counter               | int64 (8, LE) or, for revenue, double      |

Timers live only in `timers` (and the state's due_ms): the timer loop reads the head of the
ordered keys, so a million pending timers cost disk pages, not memory. Every change of the
feed (state, timer, watches, stats) commits in one transaction with that feed's cursor.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb

from services.journeys.machines import JourneyState, ProductInfo, Watch
from vitrine.v1 import journey_pb2

_U64 = struct.Struct(">Q")
_I64 = struct.Struct("<q")
_CURSOR = struct.Struct("<Q")  # the layout of services.common.follow.LmdbCursor
_F64 = struct.Struct("<d")
_PRODUCT = struct.Struct(">id")
SEP = b"\x00"
DBS = ("meta", "journeys", "states", "timers", "watches", "uwatch", "products", "messages", "delivery",
       "ready", "umsg", "caps", "engaged", "stats")
CATALOG_CURSOR = b"cursor:catalog"


def events_cursor(source: int) -> bytes:
    """The cursor of one profile shard's feed (each shard's log has its own seqs)."""
    return b"cursor:events" if source == 0 else f"cursor:events:{source}".encode()


@dataclasses.dataclass
class Delivery:
    """Delivery and attribution state of one message."""

    journey_id: str
    user_id: str
    created_ms: int
    visible_ms: int = 0          # in `ready` under this time, unless acked or dead
    attempts: int = 0
    acked: bool = False
    dead: bool = False
    opened: bool = False
    clicked: bool = False
    converted: bool = False

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Delivery:
        return cls(**json.loads(raw))


def state_key(user: str, journey_id: str) -> bytes:
    return user.encode() + SEP + journey_id.encode()


def split_state_key(key: bytes) -> tuple[str, str]:
    user, journey_id = key.split(SEP, 1)
    return user.decode(), journey_id.decode()


def timer_key(due_ms: int, user: str, journey_id: str) -> bytes:
    return _U64.pack(max(0, due_ms)) + state_key(user, journey_id)


def ready_key(visible_ms: int, message_id: str) -> bytes:
    return _U64.pack(max(0, visible_ms)) + message_id.encode()


class JourneyStore:
    """The LMDB environment and typed accessors used inside the engine's transactions."""

    def __init__(self, path: Path, *, map_size_mb: int = 8192, sync: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = lmdb.open(str(path), map_size=map_size_mb * 1024 * 1024, max_dbs=len(DBS) + 1,
                             sync=sync, metasync=sync, readahead=False)
        self.db = {name: self.env.open_db(name.encode()) for name in DBS}

    def close(self) -> None:
        self.env.close()

    def write(self) -> lmdb.Transaction:
        return self.env.begin(write=True)

    def read(self) -> lmdb.Transaction:
        return self.env.begin()

    # Cursors.
    def cursor_of(self, txn: lmdb.Transaction, name: bytes) -> int:
        raw = txn.get(name, db=self.db["meta"])
        return int(_CURSOR.unpack(raw)[0]) if raw else 0

    def set_cursor(self, txn: lmdb.Transaction, name: bytes, next_seq: int) -> None:
        txn.put(name, _CURSOR.pack(next_seq), db=self.db["meta"])

    # Definitions.
    def journeys(self, txn: lmdb.Transaction) -> list[journey_pb2.Journey]:
        out = []
        for _key, raw in txn.cursor(db=self.db["journeys"]):
            out.append(journey_pb2.Journey.FromString(bytes(raw)))
        return out

    def put_journey(self, txn: lmdb.Transaction, journey: journey_pb2.Journey) -> None:
        txn.put(journey.journey_id.encode(), journey.SerializeToString(), db=self.db["journeys"])

    def delete_journey(self, txn: lmdb.Transaction, journey_id: str) -> bool:
        return bool(txn.delete(journey_id.encode(), db=self.db["journeys"]))

    # States and timers.
    def state(self, txn: lmdb.Transaction, user: str, journey_id: str) -> JourneyState | None:
        raw = txn.get(state_key(user, journey_id), db=self.db["states"])
        return JourneyState.from_bytes(bytes(raw)) if raw is not None else None

    def state_raw(self, txn: lmdb.Transaction, user: str, journey_id: str) -> bytes:
        """The stored state's bytes (b"" when there is none)."""
        raw = txn.get(state_key(user, journey_id), db=self.db["states"])
        return bytes(raw) if raw is not None else b""

    def put_state(self, txn: lmdb.Transaction, user: str, journey_id: str, state: JourneyState) -> None:
        txn.put(state_key(user, journey_id), state.to_bytes(), db=self.db["states"])

    def set_timer(self, txn: lmdb.Transaction, user: str, journey_id: str, old_due: int, new_due: int) -> None:
        if old_due:
            txn.delete(timer_key(old_due, user, journey_id), db=self.db["timers"])
        if new_due:
            txn.put(timer_key(new_due, user, journey_id), b"", db=self.db["timers"])

    def due_timers(self, txn: lmdb.Transaction, now_ms: int, limit: int) -> list[tuple[int, str, str]]:
        """The earliest timers due at or before now: (due_ms, user, journey_id)."""
        return [(due, *split_state_key(rest)) for due, rest in self._due(txn, "timers", now_ms, limit)]

    def next_due(self, txn: lmdb.Transaction) -> int | None:
        return self._earliest(txn, "timers")

    def _due(self, txn: lmdb.Transaction, db: str, now_ms: int, limit: int) -> list[tuple[int, bytes]]:
        """The earliest entries of a time-ordered db (key: u64 ms, then the rest) at or before now,
        at most `limit`: (ms, rest of the key)."""
        out: list[tuple[int, bytes]] = []
        cursor = txn.cursor(db=self.db[db])
        if not cursor.first():
            return out
        for key in cursor.iternext(values=False):
            at = _U64.unpack_from(key)[0]
            if at > now_ms or len(out) >= limit:
                break
            out.append((at, bytes(key[8:])))
        return out

    def _earliest(self, txn: lmdb.Transaction, db: str) -> int | None:
        """The time of the first entry of a time-ordered db, None when it is empty."""
        cursor = txn.cursor(db=self.db[db])
        if not cursor.first():
            return None
        return int(_U64.unpack_from(cursor.key())[0])

    def count(self, txn: lmdb.Transaction, db: str) -> int:
        return int(txn.stat(self.db[db])["entries"])

    def user_states(self, txn: lmdb.Transaction, user: str) -> Iterator[tuple[str, JourneyState]]:
        prefix = user.encode() + SEP
        for journey_id, raw in self._under(txn, "states", prefix):
            yield journey_id.decode(), JourneyState.from_bytes(raw)

    # Watches and the product table.
    def product(self, txn: lmdb.Transaction, product_id: str) -> ProductInfo | None:
        raw = txn.get(product_id.encode(), db=self.db["products"])
        if raw is None:
            return None
        stock, price = _PRODUCT.unpack(raw)
        return ProductInfo(stock, price)

    def put_product(self, txn: lmdb.Transaction, product_id: str, info: ProductInfo) -> None:
        txn.put(product_id.encode(), _PRODUCT.pack(max(-2**31, min(2**31 - 1, info.stock)), info.price),
                db=self.db["products"])

    def put_watch(self, txn: lmdb.Transaction, product_id: str, journey_id: str, user: str, watch: Watch) -> None:
        key = product_id.encode() + SEP + journey_id.encode() + SEP + user.encode()
        txn.put(key, json.dumps(vars(watch)).encode(), db=self.db["watches"])
        txn.put(user.encode() + SEP + journey_id.encode() + SEP + product_id.encode(), b"", db=self.db["uwatch"])

    def delete_watch(self, txn: lmdb.Transaction, product_id: str, journey_id: str, user: str) -> None:
        txn.delete(product_id.encode() + SEP + journey_id.encode() + SEP + user.encode(), db=self.db["watches"])
        txn.delete(user.encode() + SEP + journey_id.encode() + SEP + product_id.encode(), db=self.db["uwatch"])

    def watches_of(self, txn: lmdb.Transaction, product_id: str) -> list[tuple[str, str, Watch]]:
        """Every (journey_id, user, watch) on a product."""
        prefix = product_id.encode() + SEP
        out: list[tuple[str, str, Watch]] = []
        for rest, raw in self._under(txn, "watches", prefix):
            journey_id, user = rest.split(SEP, 1)
            out.append((journey_id.decode(), user.decode(), Watch(**json.loads(raw))))
        return out

    def user_watches(self, txn: lmdb.Transaction, user: str) -> list[tuple[str, str]]:
        prefix = user.encode() + SEP
        out: list[tuple[str, str]] = []
        for rest, _ in self._under(txn, "uwatch", prefix):
            journey_id, product_id = rest.split(SEP, 1)
            out.append((journey_id.decode(), product_id.decode()))
        return out

    # Outbox.
    def message(self, txn: lmdb.Transaction, message_id: str) -> journey_pb2.Message | None:
        raw = txn.get(message_id.encode(), db=self.db["messages"])
        return journey_pb2.Message.FromString(bytes(raw)) if raw is not None else None

    def delivery(self, txn: lmdb.Transaction, message_id: str) -> Delivery | None:
        raw = txn.get(message_id.encode(), db=self.db["delivery"])
        return Delivery.from_bytes(bytes(raw)) if raw is not None else None

    def put_delivery(self, txn: lmdb.Transaction, message_id: str, delivery: Delivery) -> None:
        txn.put(message_id.encode(), delivery.to_bytes(), db=self.db["delivery"])

    def add_message(self, txn: lmdb.Transaction, message: journey_pb2.Message, visible_ms: int) -> bool:
        """Put a new message in the outbox; False if it is there already (a repeated send)."""
        if not txn.put(message.message_id.encode(), message.SerializeToString(), db=self.db["messages"],
                       overwrite=False):
            return False
        delivery = Delivery(message.journey_id, message.user_id, message.created_ms, visible_ms=visible_ms)
        self.put_delivery(txn, message.message_id, delivery)
        txn.put(ready_key(visible_ms, message.message_id), b"", db=self.db["ready"])
        txn.put(message.user_id.encode() + SEP + _U64.pack(message.created_ms) + message.message_id.encode(),
                b"", db=self.db["umsg"])
        return True

    def ready_messages(self, txn: lmdb.Transaction, now_ms: int, limit: int) -> list[tuple[int, str]]:
        return [(visible, message_id.decode()) for visible, message_id in self._due(txn, "ready", now_ms, limit)]

    def next_ready(self, txn: lmdb.Transaction) -> int | None:
        return self._earliest(txn, "ready")

    def move_ready(self, txn: lmdb.Transaction, message_id: str, old_ms: int, new_ms: int | None) -> None:
        txn.delete(ready_key(old_ms, message_id), db=self.db["ready"])
        if new_ms is not None:
            txn.put(ready_key(new_ms, message_id), b"", db=self.db["ready"])

    def user_message_ids(self, txn: lmdb.Transaction, user: str) -> list[str]:
        """Newest first."""
        prefix = user.encode() + SEP
        out = [rest[8:].decode() for rest, _ in self._under(txn, "umsg", prefix)]
        out.reverse()
        return out

    def delete_user_messages(self, txn: lmdb.Transaction, user: str) -> int:
        prefix = user.encode() + SEP
        keys = [prefix + rest for rest, _ in self._under(txn, "umsg", prefix)]  # all read before any delete
        for key in keys:
            message_id = key[len(prefix) + 8:]
            raw = txn.get(message_id, db=self.db["delivery"])
            if raw is not None:
                delivery = Delivery.from_bytes(bytes(raw))
                if not (delivery.acked or delivery.dead):
                    txn.delete(ready_key(delivery.visible_ms, message_id.decode()), db=self.db["ready"])
            txn.delete(message_id, db=self.db["delivery"])
            txn.delete(message_id, db=self.db["messages"])
            txn.delete(key, db=self.db["umsg"])
        return len(keys)

    # Retention.
    def purge_messages(self, txn: lmdb.Transaction, before_ms: int, start: bytes,
                       max_keys: int) -> tuple[int, bytes | None]:
        """Delete delivered (acked or dead-lettered) messages created before `before_ms`, visiting at
        most `max_keys` from `start`; returns (deleted, where to go on; None at the end)."""
        cursor = txn.cursor(db=self.db["delivery"])
        if not cursor.set_range(start):
            return 0, None
        doomed: list[tuple[bytes, Delivery]] = []
        resume: bytes | None = None
        for i, (key, raw) in enumerate(cursor):
            if i >= max_keys:
                resume = bytes(key)
                break
            delivery = Delivery.from_bytes(bytes(raw))
            if (delivery.acked or delivery.dead) and delivery.created_ms < before_ms:
                doomed.append((bytes(key), delivery))
        for key, delivery in doomed:
            txn.delete(key, db=self.db["delivery"])
            txn.delete(key, db=self.db["messages"])
            txn.delete(delivery.user_id.encode() + SEP + _U64.pack(delivery.created_ms) + key, db=self.db["umsg"])
        return len(doomed), resume

    def purge_watches(self, txn: lmdb.Transaction, keep: Callable[[str, Watch], bool], start: bytes,
                      max_keys: int) -> tuple[int, bytes | None]:
        """Delete the watches `keep(journey_id, watch)` rejects (expired, or of a deleted journey)."""
        cursor = txn.cursor(db=self.db["watches"])
        if not cursor.set_range(start):
            return 0, None
        doomed: list[tuple[str, str, str]] = []
        resume: bytes | None = None
        for i, (key, raw) in enumerate(cursor):
            if i >= max_keys:
                resume = bytes(key)
                break
            product_id, journey_id, user = bytes(key).decode().split("\x00", 2)
            if not keep(journey_id, Watch(**json.loads(bytes(raw)))):
                doomed.append((product_id, journey_id, user))
        for product_id, journey_id, user in doomed:
            self.delete_watch(txn, product_id, journey_id, user)
        return len(doomed), resume

    # Frequency caps and attribution.
    def sends(self, txn: lmdb.Transaction, user: str) -> list[int]:
        raw = txn.get(user.encode(), db=self.db["caps"])
        return list(json.loads(bytes(raw))) if raw else []

    def put_sends(self, txn: lmdb.Transaction, user: str, sends: list[int]) -> None:
        if sends:
            txn.put(user.encode(), json.dumps(sends).encode(), db=self.db["caps"])
        else:
            txn.delete(user.encode(), db=self.db["caps"])

    def engaged_message(self, txn: lmdb.Transaction, user: str) -> str:
        raw = txn.get(user.encode(), db=self.db["engaged"])
        return bytes(raw).decode() if raw else ""

    def set_engaged_message(self, txn: lmdb.Transaction, user: str, message_id: str) -> None:
        txn.put(user.encode(), message_id.encode(), db=self.db["engaged"])

    def delete_user_misc(self, txn: lmdb.Transaction, user: str) -> None:
        txn.delete(user.encode(), db=self.db["caps"])
        txn.delete(user.encode(), db=self.db["engaged"])

    # Statistics.
    def add_stat(self, txn: lmdb.Transaction, journey_id: str, name: str, delta: int = 1) -> None:
        key = journey_id.encode() + SEP + name.encode()
        raw = txn.get(key, db=self.db["stats"])
        value = (_I64.unpack(raw)[0] if raw else 0) + delta
        txn.put(key, _I64.pack(value), db=self.db["stats"])

    def add_revenue(self, txn: lmdb.Transaction, journey_id: str, amount: float) -> None:
        key = journey_id.encode() + SEP + b"revenue"
        raw = txn.get(key, db=self.db["stats"])
        txn.put(key, _F64.pack((_F64.unpack(raw)[0] if raw else 0.0) + amount), db=self.db["stats"])

    def stats(self, txn: lmdb.Transaction, journey_id: str) -> dict[str, float]:
        prefix = journey_id.encode() + SEP
        out: dict[str, float] = {}
        for rest, raw in self._under(txn, "stats", prefix):
            name = rest.decode()
            out[name] = _F64.unpack(raw)[0] if name == "revenue" else _I64.unpack(raw)[0]
        return out

    def _under(self, txn: lmdb.Transaction, db: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The entries of `db` whose key starts with `prefix`, in key order: (rest of the key, value)."""
        cursor = txn.cursor(db=self.db[db])
        if not cursor.set_range(prefix):
            return
        for key, raw in cursor:
            key = bytes(key)
            if not key.startswith(prefix):
                break
            yield key[len(prefix):], bytes(raw)
