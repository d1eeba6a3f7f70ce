"""The LMDB key and value codec of the profile store (layout in store.py's docstring).

Every key that names a user starts with its id and `SEP`; user ids never contain control
characters, so a prefix scan on `user_id SEP` is exact.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import Any, Protocol, cast

import lmdb

from services.profile import fold

TS_SEQ = struct.Struct(">QQ")  # events key suffix: timestamp_ms, seq (big-endian: sorts by time)
U32 = struct.Struct(">I")      # idempotency key value: created, Unix seconds
U64 = struct.Struct("<Q")      # meta counters (`seq`, `log_start`)
SEQ = struct.Struct(">Q")      # log key (big-endian: sorts by seq)
I64 = struct.Struct("<q")      # RFM bucket counts (RfmSketch.encode)
SEP = b"\x00"
DB_NAMES = (b"profiles", b"events", b"aliases", b"alias_rev", b"idem", b"meta", b"log", b"log_ids")
IMPORT_MARKER = b"import:"
FLAG_BYTES = (b"\x00", b"\x01")  # an `events` row's value: its flags byte alone
META_SEQ, META_LOG_START, META_RFM = b"seq", b"log_start", b"rfm:"


class Cursor(Protocol):
    """The part of an lmdb.Cursor the store uses, typed as the store opens it (buffers=False:
    keys and values are bytes, which py-lmdb's own annotations do not say)."""

    def set_range(self, key: bytes) -> bool: ...
    def first(self) -> bool: ...
    def next(self) -> bool: ...
    def key(self) -> bytes: ...
    def value(self) -> bytes: ...
    def delete(self) -> bool: ...
    def __iter__(self) -> Iterator[tuple[bytes, bytes]]: ...


class Txn(Protocol):
    """The part of an lmdb.Transaction the store uses (see Cursor)."""

    def get(self, key: bytes, default: None = None, db: Any = None) -> bytes | None: ...
    def put(self, key: bytes, value: bytes, dupdata: bool = False, overwrite: bool = True,
            append: bool = False, db: Any = None) -> bool: ...
    def delete(self, key: bytes, value: bytes = b"", db: Any = None) -> bool: ...
    def cursor(self, db: Any = None) -> Cursor: ...
    def stat(self, db: Any) -> dict[str, int]: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


def as_txn(txn: lmdb.Transaction) -> Txn:
    return cast(Txn, txn)


@contextlib.contextmanager
def read_txn(env: lmdb.Environment, db: Any = None) -> Iterator[Txn]:
    """A read-only transaction, ended when the block ends."""
    with env.begin(db=db) as txn:
        yield as_txn(txn)


def event_key(user: bytes, ts: int, seq: int) -> bytes:
    return user + SEP + TS_SEQ.pack(ts, seq)


def seq_of_event_key(key: bytes) -> bytes:
    """The log key of an `events` row: its key ends with the seq, packed as the log packs it."""
    return key[-8:]


def event_key_time(key: bytes) -> tuple[int, int]:
    """(timestamp_ms, index of the separator) of an `events` key."""
    sep = key.index(SEP)
    return TS_SEQ.unpack_from(key, sep + 1)[0], sep


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Wire tags (field number << 3 | 2) of LoggedEvent.event and LoggedEvent.canonical_user_id.
_TAG_LOGGED_EVENT, _TAG_CANONICAL = b"\x12", b"\x22"
_PERSONALIZATION_OFF = b"\x30\x01"  # LoggedEvent.personalization_off = true
_VARINT_TABLE = 1 << 14  # every length of up to two varint bytes: one list index, no loop
_VARINTS = [varint(n) for n in range(_VARINT_TABLE)]


def logged_event_bytes(event: bytes, canonical: bytes, flags: int) -> bytes:
    """A serialized LoggedEvent (without seq) around an already serialized Event, built by hand
    so the event is serialized once per write (for the log, which is also the feed).
    `canonical` empty: the event's own user_id is the profile (the feed fills it in on reading)."""
    n = len(event)
    out = _TAG_LOGGED_EVENT + (_VARINTS[n] if n < _VARINT_TABLE else varint(n)) + event
    if canonical:
        m = len(canonical)
        out += _TAG_CANONICAL + (_VARINTS[m] if m < _VARINT_TABLE else varint(m)) + canonical
    return out + _PERSONALIZATION_OFF if flags & fold.FLAG_NO_PERSONALIZATION else out


def take_prefix(txn: Txn, db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """Delete every key starting with `prefix`; return the removed pairs."""
    removed: list[tuple[bytes, bytes]] = []
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


def prefix_items(txn: Txn, db: Any, prefix: bytes) -> list[tuple[bytes, bytes]]:
    cursor = txn.cursor(db=db)
    out: list[tuple[bytes, bytes]] = []
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not key.startswith(prefix):
                break
            out.append((key, value))
    return out
