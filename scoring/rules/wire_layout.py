"""Where a rule program's features are in protobuf wire bytes, laid out for the kernel of wire.py.

A `Read` names, for one feature slot, the field numbers from the root message down to the
field and how to read it (an op of `OPS`). `build_layout` turns one Read per slot into the
int64 array the kernel walks: a dispatch table by (message node, field number), the rows of
each field's reads, hash tables of the keys that list/map reads look for, tables by element
type for the counter windows, and the symbol table that turns strings into the program's
codes. Plain Python and NumPy: the kernel is in wire.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

# Ops. Scalars and lists read the field's own value; the element ops parse each occurrence
# (a map entry, a repeated sub-message) and read fields inside it.
DESCEND, VARINT, BOOL, DOUBLE, STRING, COUNT, INDEX, CONTAINS = range(8)
MAP_DOUBLE, MAP_VARINT, MAP_STRING, MAP_HAS, ELEMENT_INDEX, ELEMENT_CONTAINS = range(8, 14)
SUM_QUANTITY, SUM_PRICE_QUANTITY, WINDOW = range(14, 17)
# Rows the builder makes of several reads of one field: KEYED looks the compared string (the
# value, a map entry's key or an element's field) up in a hash table of the keys its reads
# want, instead of comparing it with each; WINDOWS finds the windows of an element's type
# through a table by type, instead of testing each window.
KEYED, WINDOWS = 17, 18
_VALUE, _MAP_KEYS, _ELEMENT_FIELD = range(3)   # what a KEYED row compares

# name -> (code, number of args, uses `key`, yields a string)
OPS: dict[str, tuple[int, int, bool, bool]] = {
    "varint": (VARINT, 0, False, False),        # int32/int64/enum as a number
    "bool": (BOOL, 0, False, False),            # 1.0 / 0.0
    "double": (DOUBLE, 0, False, False),
    "string": (STRING, 0, False, True),
    "count": (COUNT, 0, False, False),          # occurrences of a repeated field or map: its size
    "index": (INDEX, 1, False, True),           # (n,): the n-th string of a repeated field, "" past the end
    "contains": (CONTAINS, 0, True, False),     # some string of the repeated field equals key
    "map_double": (MAP_DOUBLE, 0, True, False),  # map<string, double>[key], 0 when absent
    "map_varint": (MAP_VARINT, 0, True, False),
    "map_string": (MAP_STRING, 0, True, True),
    "map_has": (MAP_HAS, 0, True, False),       # key is in the map
    "element_index": (ELEMENT_INDEX, 2, False, True),        # (n, field): string `field` of element n
    "element_contains": (ELEMENT_CONTAINS, 1, True, False),  # (field,): some element's string equals key
    "sum_quantity": (SUM_QUANTITY, 1, False, False),         # (quantity,): sum of quantities, <= 0 counting 1
    "sum_price_quantity": (SUM_PRICE_QUANTITY, 2, False, False),  # (quantity, price): sum of price x that
    "window": (WINDOW, 5, False, False),        # (day, type, count, wanted type, days): sum of count
}                                               # over elements of that type on the last `days` days

MAP_KEY, MAP_VALUE = 1, 2   # field numbers of a map entry, fixed by the protobuf encoding
ELEMENT_FIELDS = 16         # element ops read fields 1..15 of an element
MAX_DEPTH = 8               # nested messages on a read's path
MAX_FIELD = 4095            # a larger field number would make the dispatch table large
MAX_WINDOW_TYPE = 4095      # the same for the table of WINDOWS by element type

# layout header
_SLOTS, _NUMBERS, _WIDTH, _TABLE, _ROWS, _EXTRA, _HASH, _HASH_SIZE, _COMPARE, _DAY_MS = range(10)
_HEADER = 10
# A row: op, slot, key offset, key length (in the pool), 5 args. DESCEND: (child node); KEYED:
# (what, element field, table, table size) with the table in the extra area; WINDOWS: (day,
# type, count fields, table, table size).
ROW = 9

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


@dataclasses.dataclass(frozen=True)
class Read:
    """Where one feature slot's value is: `path` holds the field numbers from the root message
    down to the field read, `op` names how it is read (see OPS), `key` is the string a
    contains/map op looks for and `args` the op's numbers."""

    path: tuple[int, ...]
    op: str
    key: str = ""
    args: tuple[int, ...] = ()


def fnv1a(data: bytes) -> int:
    """The 64-bit FNV-1a hash the kernel uses for strings, as a signed int64."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


def _check(read: Read, slot: int, is_string_slot: bool) -> int:
    if read.op not in OPS:
        raise ValueError(f"slot {slot}: unknown op {read.op!r}")
    code, nargs, _, yields_string = OPS[read.op]
    if len(read.args) != nargs:
        raise ValueError(f"slot {slot}: {read.op} takes {nargs} args, got {read.args}")
    if yields_string != is_string_slot:
        raise ValueError(f"slot {slot}: {read.op} yields a {'string' if yields_string else 'number'}, "
                         f"the slot holds a {'string' if is_string_slot else 'number'}")
    if not read.path or len(read.path) > MAX_DEPTH + 1 or not all(0 < f <= MAX_FIELD for f in read.path):
        raise ValueError(f"slot {slot}: path {read.path} must hold 1..{MAX_DEPTH + 1} field numbers "
                         f"in 1..{MAX_FIELD}")
    fields = {ELEMENT_INDEX: read.args[1:], ELEMENT_CONTAINS: read.args, SUM_QUANTITY: read.args,
              SUM_PRICE_QUANTITY: read.args, WINDOW: read.args[:3]}.get(code, ())
    if not all(0 < f < ELEMENT_FIELDS for f in fields):
        raise ValueError(f"slot {slot}: element fields {fields} must be in 1..{ELEMENT_FIELDS - 1}")
    if (code in (INDEX, ELEMENT_INDEX) and read.args[0] < 0) or (
            code == WINDOW and not (read.args[4] >= 1 and 0 <= read.args[3] <= MAX_WINDOW_TYPE)):
        raise ValueError(f"slot {slot}: {read.op} args {read.args} out of range")
    return code


def _table_size(entries: int) -> int:
    """A power of two at least twice `entries`: open addressing stays short and always ends."""
    size = 2
    while size < 2 * entries:
        size *= 2
    return size


class _Builder:
    """Lays out the kernel's int64 program: header, dispatch table by (node, field), rows, an
    extra area for the KEYED and WINDOWS tables, and the symbol hash table; strings in a pool."""

    def __init__(self) -> None:
        self.pool = bytearray()
        self.offsets: dict[bytes, int] = {}
        self.rows: list[list[int]] = []
        self.extra: list[int] = []
        self.pending: list[tuple[int, int, dict[str, list[tuple[int, int, Read]]]]] = []

    def stored(self, text: str) -> tuple[int, int]:
        data = text.encode()
        if data not in self.offsets:
            self.offsets[data] = len(self.pool)
            self.pool.extend(data)
        return self.offsets[data], len(data)

    def row(self, op: int, slot: int, key: tuple[int, int] = (0, 0), args: Sequence[int] = ()) -> int:
        self.rows.append([op, slot, *key, *args, *[0] * (5 - len(args))])
        return len(self.rows) - 1

    def keyed(self, what: int, field: int, reads: list[tuple[int, int, Read]]) -> list[int]:
        """A KEYED row; its keyed-op rows are placed later (after every dispatched row)."""
        by_key: dict[str, list[tuple[int, int, Read]]] = {}
        for item in reads:
            by_key.setdefault(item[2].key, []).append(item)
        size = _table_size(len(by_key))
        table = len(self.extra)
        self.extra += [0, -1, -1] * size     # (hash, first row, end row); first row -1: empty
        self.pending.append((table, size, by_key))
        return [KEYED, -1, 0, 0, what, field, table, size, 0]

    def place_keyed(self) -> None:
        for table, size, by_key in self.pending:
            for key, items in by_key.items():
                first = len(self.rows)
                for slot, code, _ in items:
                    self.row(code, slot, self.stored(key))
                h = fnv1a(key.encode())
                i = h & (size - 1)
                while self.extra[table + 3 * i + 1] >= 0:
                    i = (i + 1) & (size - 1)
                self.extra[table + 3 * i:table + 3 * i + 3] = [h, first, len(self.rows)]

    def windows(self, fields: tuple[int, ...], reads: list[tuple[int, int, Read]]) -> list[int]:
        """A WINDOWS row: per element type, (first, end) into (slot, days) pairs."""
        types = 1 + max(r.args[3] for _, _, r in reads)
        table = len(self.extra)
        self.extra += [0, 0] * types
        for wanted in range(types):
            pairs = [(slot, r.args[4]) for slot, _, r in reads if r.args[3] == wanted]
            first = len(self.extra)
            for pair in pairs:
                self.extra += pair
            self.extra[table + 2 * wanted:table + 2 * wanted + 2] = [first, len(self.extra)]
        return [WINDOWS, -1, 0, 0, *fields, table, types]


def build_layout(reads: Sequence[Read], numbers: int, symbols: Mapping[str, int], compare_strings: bool,
                 day_ms: int) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, ...], int]]:
    """(layout int64, pool uint8, node of each path prefix) for the kernel; reads[i] fills slot i,
    slots >= `numbers` hold strings (as `symbols` codes)."""
    b = _Builder()
    nodes: dict[tuple[int, ...], int] = {(): 0}
    groups: dict[tuple[int, int], list[tuple[int, int, Read]]] = {}
    children: dict[tuple[int, int], int] = {}
    for slot, read in enumerate(reads):
        code = _check(read, slot, slot >= numbers)
        node = 0
        for depth in range(1, len(read.path)):
            prefix = read.path[:depth]
            if prefix not in nodes:
                nodes[prefix] = len(nodes)
                children[(node, prefix[-1])] = nodes[prefix]
            node = nodes[prefix]
        groups.setdefault((node, read.path[-1]), [])
        groups[(node, read.path[-1])].append((slot, code, read))
    for place in children:
        groups.setdefault(place, [])

    width = max((field for _, field in groups), default=0) + 1
    table = np.zeros((len(nodes), width, 2), dtype=np.int64)
    for (node, field) in sorted(groups):
        items = groups[(node, field)]
        first = len(b.rows)
        keyed: dict[tuple[int, int], list[tuple[int, int, Read]]] = {}
        windows: dict[tuple[int, ...], list[tuple[int, int, Read]]] = {}
        for slot, code, read in items:
            if code == CONTAINS:
                keyed.setdefault((_VALUE, 0), []).append((slot, code, read))
            elif code in (MAP_DOUBLE, MAP_VARINT, MAP_STRING, MAP_HAS):
                keyed.setdefault((_MAP_KEYS, MAP_KEY), []).append((slot, code, read))
            elif code == ELEMENT_CONTAINS:
                keyed.setdefault((_ELEMENT_FIELD, read.args[0]), []).append((slot, code, read))
            elif code == WINDOW:
                windows.setdefault(read.args[:3], []).append((slot, code, read))
            else:
                b.row(code, slot, args=read.args)
        for (what, element_field), group in keyed.items():
            b.rows.append(b.keyed(what, element_field, group))
        for fields, group in windows.items():
            b.rows.append(b.windows(fields, group))
        if (node, field) in children:  # last: the kernel enters the sub-message after the other rows
            b.row(DESCEND, -1, args=(children[(node, field)],))
        table[node, field] = first, len(b.rows)
    b.place_keyed()

    size = _table_size(len(symbols))
    hashed = np.full((size, 3), -1, dtype=np.int64)  # (pool offset, length, code); length -1: empty
    for text, symbol in symbols.items():
        offset, length = b.stored(text)
        i = fnv1a(text.encode()) & (size - 1)
        while hashed[i, 1] >= 0:
            i = (i + 1) & (size - 1)
        hashed[i] = offset, length, symbol

    body = [table.ravel(), np.array(b.rows, dtype=np.int64).reshape(-1), np.array(b.extra, dtype=np.int64),
            hashed.ravel()]
    header = np.zeros(_HEADER, dtype=np.int64)
    header[_SLOTS], header[_NUMBERS], header[_WIDTH] = len(reads), numbers, width
    header[_TABLE] = _HEADER
    header[_ROWS] = header[_TABLE] + body[0].size
    header[_EXTRA] = header[_ROWS] + body[1].size
    header[_HASH] = header[_EXTRA] + body[2].size
    header[_HASH_SIZE], header[_COMPARE], header[_DAY_MS] = size, int(compare_strings), day_ms
    layout = np.concatenate([header, *body])
    return layout, np.frombuffer(bytes(b.pool) or b"\0", dtype=np.uint8).copy(), nodes
