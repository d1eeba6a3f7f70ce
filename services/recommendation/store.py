"""The signals' durable state in the recommendation LMDB (the catalog's environment).

Named database `SIGNALS_DB` holds `SNAPSHOT_KEY` (the blob `Signals.encode` makes) and one
`CURSOR_PREFIX + source` key per followed feed (the next seq to ask for, 8 bytes big-endian),
written in one transaction: the cursors saved are exactly those the saved state has consumed, so a
restart resumes each feed where the state ends (no event lost, none counted twice).
"""

from __future__ import annotations

import struct

import lmdb

SIGNALS_DB = b"signals state"    # contains a space: never a product id in the main database
SNAPSHOT_KEY = b"snapshot"
CURSOR_PREFIX = b"cursor "
_SEQ = struct.Struct(">q")


class SignalStore:
    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.db = env.open_db(SIGNALS_DB)

    def save(self, blob: bytes, cursors: dict[str, int]) -> None:
        """Replace the snapshot and the cursors in one transaction (blocking)."""
        with self.env.begin(write=True, db=self.db) as txn:
            txn.put(SNAPSHOT_KEY, blob)
            for source, next_seq in cursors.items():
                txn.put(CURSOR_PREFIX + source.encode(), _SEQ.pack(next_seq))

    def load(self) -> tuple[bytes | None, dict[str, int]]:
        """The saved snapshot (None if never saved) and cursors."""
        with self.env.begin(db=self.db) as txn:
            blob = txn.get(SNAPSHOT_KEY)
            cursors = {}
            cursor = txn.cursor()
            if cursor.set_range(CURSOR_PREFIX):
                for key, value in cursor:
                    if not key.startswith(CURSOR_PREFIX):
                        break
                    cursors[key[len(CURSOR_PREFIX):].decode()] = int(_SEQ.unpack(value)[0])
        return (bytes(blob) if blob is not None else None), cursors
