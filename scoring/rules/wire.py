"""Read a rule program's features straight from protobuf wire bytes, and run it, in one kernel call.

    wire = WireProgram(program, reads)      # reads[i]: where feature slot i is in the message
    hits = wire.matching(message, now_ms)   # program.matching(features), or None if malformed
    features = wire.read(message, now_ms)   # the feature vector alone (tests, debugging)

Reading each feature through a Python protobuf API costs 0.1-0.7 us per value (an attribute
read, a map lookup, a pass over a repeated field); with 50 features that is most of an
Evaluate. This kernel walks the serialized message once and fills every slot on the way,
then runs the program over the same register file. It knows only the wire format: which
field numbers to read and how (`Read`) is the caller's business.

The walk dispatches on (message node, field number) through a dense table, so a field no
read names costs only its skip. Sub-messages on a read's path are entered; repeated
elements that an op reads inside are parsed once per element (map entries and counters by
small dedicated parsers, other elements into a scratch). The reads of one field that look
for a string (list membership, map keys) share one hash table of their keys, and the
`events()`-style windows of one field one table by element type, so an element costs one
lookup, not one test per read. Values follow proto3: a missing scalar is 0 / "" /
false, the last occurrence of a singular field wins. String values become the program's
symbol codes (an FNV-1a hash table over the rules' string constants); an unknown string is
-1, or, when the program compares two string fields, -1, -2, ... per distinct value, exactly
as `Program.encode` numbers them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numba
import numpy as np

from scoring.rules.program import Program, _evaluate
from scoring.rules.wire_layout import (
    _COMPARE,
    _DAY_MS,
    _EXTRA,
    _FNV_OFFSET,
    _FNV_PRIME,
    _HASH,
    _HASH_SIZE,
    _MAP_KEYS,
    _NUMBERS,
    _ROWS,
    _SLOTS,
    _TABLE,
    _VALUE,
    _WIDTH,
    BOOL,
    CONTAINS,
    COUNT,
    DESCEND,
    DOUBLE,
    ELEMENT_CONTAINS,
    ELEMENT_FIELDS,
    ELEMENT_INDEX,
    INDEX,
    KEYED,
    MAP_DOUBLE,
    MAP_HAS,
    MAP_KEY,
    MAP_STRING,
    MAP_VALUE,
    MAX_DEPTH,
    ROW,
    STRING,
    SUM_QUANTITY,
    VARINT,
    WINDOWS,
    Read,
    build_layout,
    fnv1a,
)
from scoring.units import DAY_MS

__all__ = ["MALFORMED", "Read", "WireProgram", "build_layout", "fnv1a"]

# The layout's constants, private to these two modules, are compile-time values in the kernels
# below. Numba's cache does not
# notice a change in another file: after editing wire_layout.py's constants or program.py's
# kernel, touch this file so the kernels are recompiled.

# Messages are passed to the kernels as `bytes` (numba's Bytes type), one message or many joined:
# np.frombuffer would cost ~1 us per call, and one buffer type means one compilation of the reader.
_RAW = numba.types.Bytes(numba.uint8, 1, "C", readonly=True)

# -- the kernel ---------------------------------------------------------------------------
# The small helpers (_varint, _field, _same, _hash, the scratch accessors) are inlined by Numba
# (inline="always"): as calls, the heavy shopper's Evaluate reads ~20 % slower. The per-element
# parsers (_element, _entry, _counter) and _apply_keyed stay calls: inlining them too made the
# cold compile of this module 54 s instead of ~28 s for no measurable gain.

# (value, next position); (-1, -1) when the varint runs off the end or past 64 bits.
@numba.njit(numba.types.UniTuple(numba.int64, 2)(_RAW, numba.int64), cache=True, nogil=True, inline="always")
def _varint(buf, pos):  # pragma: no cover - compiled
    if pos < len(buf) and buf[pos] < 0x80:  # one byte: keys, types, counts, short lengths
        return np.int64(buf[pos]), pos + 1
    result = np.uint64(0)
    shift = np.uint64(0)
    n = len(buf)
    while pos < n:
        b = np.uint64(buf[pos])
        pos += 1
        result |= (b & np.uint64(0x7F)) << shift
        if b < np.uint64(0x80):
            return np.int64(result), pos
        shift += np.uint64(7)
        if shift >= np.uint64(64):
            return -1, -1
    return -1, -1


@numba.njit(cache=True, inline="always")
def _fixed(buf, pos, n):  # pragma: no cover - compiled
    """n little-endian bytes at buf[pos:] as int64 bits."""
    value = np.uint64(0)
    for k in range(n):
        value |= np.uint64(buf[pos + k]) << np.uint64(8 * k)
    return np.int64(value)


@numba.njit(cache=True)
def _skip_group(buf, pos, stop):  # pragma: no cover - compiled
    """Position after the end-group tag matching an already-read start-group tag; -1 if malformed."""
    depth = 1
    while pos < stop:
        key, pos = _varint(buf, pos)
        if pos < 0:
            return -1
        wire = key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            if pos < 0:
                return -1
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos < 0 or length < 0:
                return -1
            pos += length
        elif wire == 3:
            depth += 1
        elif wire == 4:
            depth -= 1
            if depth == 0:
                return pos if pos <= stop else -1
        else:
            return -1
    return -1


@numba.njit(cache=True, inline="always")
def _field(buf, pos, stop):  # pragma: no cover - compiled
    """One field at buf[pos:stop]: (field number, wire type, value, value start, length, next pos);
    next pos -1 when malformed. Varints and fixed values come as int64 bits, strings and
    sub-messages as (start, length); a group is skipped (wire type 3, next pos after it)."""
    key, pos = _varint(buf, pos)
    if pos < 0 or pos > stop:
        return 0, 0, 0, 0, 0, -1
    wire = key & 7
    value = np.int64(0)
    start = pos
    length = np.int64(0)
    if wire == 0:
        value, pos = _varint(buf, pos)
    elif wire == 1:
        if pos + 8 > stop:
            return 0, 0, 0, 0, 0, -1
        value = _fixed(buf, pos, 8)
        pos += 8
    elif wire == 5:
        if pos + 4 > stop:
            return 0, 0, 0, 0, 0, -1
        value = _fixed(buf, pos, 4)
        pos += 4
    elif wire == 2:
        length, pos = _varint(buf, pos)
        if pos < 0 or length < 0 or pos + length > stop:
            return 0, 0, 0, 0, 0, -1
        start = pos
        pos += length
    elif wire == 3:
        pos = _skip_group(buf, pos, stop)
    else:
        return 0, 0, 0, 0, 0, -1
    if pos > stop:
        pos = -1
    return key >> 3, wire, value, start, length, pos


@numba.njit(cache=True)
def _element(buf, start, stop, scratch):  # pragma: no cover - compiled
    """Parse one sub-message into scratch, the last occurrence of each field 1..ELEMENT_FIELDS-1:
    [values | wire types | starts | lengths | stamps, then the current stamp]. A field is present
    when its stamp is the current one (no clearing between elements). False when malformed."""
    n = ELEMENT_FIELDS
    stamp = scratch[5 * n] + 1
    scratch[5 * n] = stamp
    pos = start
    while pos < stop:
        field, wire, value, vstart, length, pos = _field(buf, pos, stop)
        if pos < 0:
            return False
        if field < n and wire != 3:
            scratch[field] = value
            scratch[n + field] = wire
            scratch[2 * n + field] = vstart
            scratch[3 * n + field] = length
            scratch[4 * n + field] = stamp
    return True


@numba.njit(cache=True, inline="always")
def _same(buf, start, length, pool, offset, n):  # pragma: no cover - compiled
    if length != n:
        return False
    for k in range(n):  # noqa: SIM110 - a plain loop compiles to a plain loop in Numba
        if buf[start + k] != pool[offset + k]:
            return False
    return True


@numba.njit(cache=True, inline="always")
def _hash(buf, start, length):  # pragma: no cover - compiled
    h = np.uint64(_FNV_OFFSET)
    for k in range(length):
        h = (h ^ np.uint64(buf[start + k])) * np.uint64(_FNV_PRIME)
    return h


@numba.njit(cache=True)
def _symbol(buf, start, length, layout, pool):  # pragma: no cover - compiled
    """The symbol code of the string buf[start:start+length], -1 when it is not a symbol."""
    h = _hash(buf, start, length)
    mask = layout[_HASH_SIZE] - 1
    i = np.int64(h & np.uint64(mask))
    base = layout[_HASH]
    while True:
        entry = base + 3 * i
        n = layout[entry + 1]
        if n < 0:
            return -1
        if _same(buf, start, length, pool, layout[entry], n):
            return layout[entry + 2]
        i = (i + 1) & mask


@numba.njit(cache=True, inline="always")
def _present(scratch, field):  # pragma: no cover - compiled
    return scratch[4 * ELEMENT_FIELDS + field] == scratch[5 * ELEMENT_FIELDS]


@numba.njit(cache=True, inline="always")
def _value(scratch, field):  # pragma: no cover - compiled
    """The element's field value (int64 bits), 0 when absent."""
    return scratch[field] if _present(scratch, field) else np.int64(0)


@numba.njit(cache=True, inline="always")
def _span(scratch, field):  # pragma: no cover - compiled
    """(start, length) of the element's string field; length 0 when absent."""
    if not _present(scratch, field):
        return np.int64(0), np.int64(0)
    return scratch[2 * ELEMENT_FIELDS + field], scratch[3 * ELEMENT_FIELDS + field]


@numba.njit(cache=True, inline="always")
def _wire_ok(scratch, field, wire):  # pragma: no cover - compiled
    """The element's field is absent or has the wire type the op expects."""
    return not _present(scratch, field) or scratch[ELEMENT_FIELDS + field] == wire


@numba.njit(cache=True)
def _entry(buf, start, stop):  # pragma: no cover - compiled
    """A map entry: (key start, key length, value wire type or -1, value bits, value start, value
    length, ok); the last occurrence of each field, other fields skipped."""
    key_start = key_length = value = value_start = value_length = np.int64(0)
    value_wire = np.int64(-1)
    pos = start
    while pos < stop:
        field, wire, bits, vstart, length, pos = _field(buf, pos, stop)
        if pos < 0 or (field == MAP_KEY and wire != 2):
            return key_start, key_length, value_wire, value, value_start, value_length, False
        if field == MAP_KEY:
            key_start, key_length = vstart, length
        elif field == MAP_VALUE and wire != 3:
            value_wire, value, value_start, value_length = wire, bits, vstart, length
    return key_start, key_length, value_wire, value, value_start, value_length, True


@numba.njit(cache=True)
def _counter(buf, start, stop, day_f, type_f, count_f):  # pragma: no cover - compiled
    """(day, type, count, ok) of a counter element whose three fields are varints."""
    day = kind = count = np.int64(0)
    pos = start
    while pos < stop:
        field, wire, value, _, _, pos = _field(buf, pos, stop)
        if pos < 0:
            return day, kind, count, False
        if field in (day_f, type_f, count_f):
            if wire != 0:
                return day, kind, count, False
            if field == day_f:
                day = value
            elif field == type_f:
                kind = value
            else:
                count = value
    return day, kind, count, True


@numba.njit(cache=True)
def _apply_keyed(op, slot, value_wire, value, value_start, value_length, reg, locs, bits,
                 as_double):  # pragma: no cover - compiled
    """A keyed read whose key matched; a map read takes the entry's value (wire type -1: absent).
    False when the value has the wrong wire type."""
    if op in (CONTAINS, MAP_HAS, ELEMENT_CONTAINS):
        reg[slot] = 1.0
    elif op == MAP_STRING:
        if value_wire >= 0 and value_wire != 2:
            return False
        locs[2 * slot] = value_start
        locs[2 * slot + 1] = value_length if value_wire >= 0 else 0
    elif op == MAP_DOUBLE:
        if value_wire >= 0 and value_wire != 1:
            return False
        bits[0] = value if value_wire >= 0 else 0
        reg[slot] = as_double[0]
    else:  # MAP_VARINT
        if value_wire >= 0 and value_wire != 0:
            return False
        reg[slot] = float(value) if value_wire >= 0 else 0.0
    return True


@numba.njit(cache=True)
def _read(layout, pool, buf, start, stop, root, now, reg):  # pragma: no cover - compiled
    """Fill reg[:slots] (zeroed by the caller) from the message buf[start:stop], whose type is node
    `root` of the reads' paths (0: the message they start from); False when it is malformed or a
    field has a wire type its read does not expect."""
    n = ELEMENT_FIELDS
    slots = layout[_SLOTS]
    width = layout[_WIDTH]
    table = layout[_TABLE]
    rows = layout[_ROWS]
    extra = layout[_EXTRA]
    if extra == rows:  # no reads
        return True
    today = np.int64(now // layout[_DAY_MS])
    # One zeroed allocation for the working arrays (each allocation costs ~0.1 us).
    n_rows = (extra - rows) // ROW
    work = np.zeros(2 * slots + n_rows + 5 * n + 1 + 1 + 2 * MAX_DEPTH, dtype=np.int64)
    locs = work[:2 * slots]                                 # strings: (start, length) per slot
    counters = work[2 * slots:2 * slots + n_rows]           # index rows: elements seen
    rest = 2 * slots + n_rows
    scratch = work[rest:rest + 5 * n + 1]                       # one element's fields, see _element
    bits = work[rest + 5 * n + 1:rest + 5 * n + 2]              # a fixed64 value, seen as a double
    as_double = bits.view(np.float64)
    stops = work[rest + 5 * n + 2:rest + 5 * n + 2 + MAX_DEPTH]  # the sub-messages entered
    nodes = work[rest + 5 * n + 2 + MAX_DEPTH:]
    depth = 0
    node = root
    pos = start
    while True:
        if pos >= stop:
            if depth == 0:
                break
            depth -= 1
            stop = stops[depth]
            node = nodes[depth]
            continue
        field, wire, value, vstart, length, pos = _field(buf, pos, stop)
        if pos < 0:
            return False
        if field >= width or wire == 3:
            continue
        at = table + 2 * (node * width + field)
        parsed = False  # this occurrence parsed into scratch (element rows)
        for i in range(layout[at], layout[at + 1]):
            r = rows + i * ROW
            op = layout[r]
            slot = layout[r + 1]
            if op == COUNT:
                reg[slot] += 1.0
            elif op in (VARINT, BOOL):
                if wire != 0:
                    return False
                if op == VARINT:
                    reg[slot] = float(value)
                else:
                    reg[slot] = 1.0 if value != 0 else 0.0
            elif op == DOUBLE:
                if wire != 1:
                    return False
                bits[0] = value
                reg[slot] = as_double[0]
            elif wire != 2:  # every other row reads a string, a sub-message or an element
                return False
            elif op == DESCEND:  # last of its field: enter the sub-message, resume after it
                if depth == MAX_DEPTH:
                    return False
                stops[depth] = stop
                nodes[depth] = node
                depth += 1
                stop = pos
                pos = vstart
                node = layout[r + 4]
                break
            elif op == STRING:
                locs[2 * slot] = vstart
                locs[2 * slot + 1] = length
            elif op == INDEX:
                if counters[i] == layout[r + 4]:
                    locs[2 * slot] = vstart
                    locs[2 * slot + 1] = length
                counters[i] += 1
            else:
                what = layout[r + 4]
                if op == WINDOWS:
                    day, kind, count, ok = _counter(buf, vstart, vstart + length, layout[r + 4], layout[r + 5],
                                                    layout[r + 6])
                    if not ok:
                        return False
                    if 0 <= kind < layout[r + 8] and day <= today:
                        by_type = extra + layout[r + 7] + 2 * kind
                        for w in range(extra + layout[by_type], extra + layout[by_type + 1], 2):
                            if today - layout[w + 1] < day:
                                reg[layout[w]] += count
                    continue
                value_wire = np.int64(-1)
                value = value_start = value_length = np.int64(0)
                if op == KEYED and what == _MAP_KEYS:
                    key_start, key_length, value_wire, value, value_start, value_length, ok = _entry(
                        buf, vstart, vstart + length)
                    if not ok:
                        return False
                elif op == KEYED and what == _VALUE:
                    key_start, key_length = vstart, length
                else:
                    if not parsed:
                        if not _element(buf, vstart, vstart + length, scratch):
                            return False
                        parsed = True
                    if op == KEYED:  # _ELEMENT_FIELD
                        f = layout[r + 5]
                        if not _wire_ok(scratch, f, 2):
                            return False
                        key_start, key_length = _span(scratch, f)
                if op == KEYED:
                    h = np.int64(_hash(buf, key_start, key_length))
                    keys = extra + layout[r + 6]
                    mask = layout[r + 7] - 1
                    j = h & mask
                    while layout[keys + 3 * j + 1] >= 0:  # every entry with this hash (collisions)
                        if layout[keys + 3 * j] == h:
                            for k in range(layout[keys + 3 * j + 1], layout[keys + 3 * j + 2]):
                                kr = rows + k * ROW
                                same = _same(buf, key_start, key_length, pool, layout[kr + 2], layout[kr + 3])
                                if same and not _apply_keyed(layout[kr], layout[kr + 1], value_wire, value,
                                                             value_start, value_length, reg, locs, bits, as_double):
                                    return False
                        j = (j + 1) & mask
                elif op == ELEMENT_INDEX:
                    if counters[i] == layout[r + 4]:
                        f = layout[r + 5]
                        if not _wire_ok(scratch, f, 2):
                            return False
                        locs[2 * slot], locs[2 * slot + 1] = _span(scratch, f)
                    counters[i] += 1
                else:  # SUM_QUANTITY, SUM_PRICE_QUANTITY
                    quantity_f = layout[r + 4]
                    if not _wire_ok(scratch, quantity_f, 0):
                        return False
                    quantity = _value(scratch, quantity_f)
                    if quantity <= 0:
                        quantity = 1
                    if op == SUM_QUANTITY:
                        reg[slot] += quantity
                    else:
                        price_f = layout[r + 5]
                        if not _wire_ok(scratch, price_f, 1):
                            return False
                        bits[0] = _value(scratch, price_f)
                        reg[slot] += as_double[0] * quantity
    # Strings to symbol codes, numbering unknown ones as Program.encode does.
    unknown = 0
    for s in range(layout[_NUMBERS], slots):
        start = locs[2 * s]
        length = locs[2 * s + 1]
        code = np.float64(0.0) if length == 0 else np.float64(_symbol(buf, start, length, layout, pool))
        if code < 0.0 and layout[_COMPARE] != 0:
            code = 0.0
            for earlier in range(layout[_NUMBERS], s):
                if reg[earlier] < 0.0 and _same(buf, start, length, buf, locs[2 * earlier], locs[2 * earlier + 1]):
                    code = reg[earlier]
                    break
            if code == 0.0:
                unknown += 1
                code = np.float64(-unknown)
        reg[s] = code
    return True


_I64S = numba.int64[::1]
_F64S = numba.float64[::1]
_U8S = numba.uint8[::1]
MALFORMED = -1


# Read and run in one call: each Numba call costs ~1 us of dispatch. Numba's cache does not
# see changes to callees in other files: after editing program.py's kernel (_evaluate), touch
# this file so these are recompiled too.
@numba.njit(_I64S(_I64S, _F64S, _I64S, _U8S, _RAW, numba.float64), cache=True)
def _run_wire(code, consts, layout, pool, message, now):  # pragma: no cover - compiled
    reg = np.empty(code[0], dtype=np.float64)
    slots = layout[_SLOTS]
    reg[:slots] = 0.0
    if not _read(layout, pool, message, 0, len(message), 0, now, reg):
        return np.full(1, MALFORMED, dtype=np.int64)
    reg[slots:slots + consts.shape[0]] = consts
    return _evaluate(code, consts, reg, now)


@numba.njit(_F64S(_I64S, _U8S, _RAW, numba.float64), cache=True)
def _read_features(layout, pool, message, now):  # pragma: no cover - compiled
    """The features, then 1.0 (read) or 0.0 (malformed)."""
    reg = np.zeros(layout[_SLOTS] + 1, dtype=np.float64)
    reg[-1] = 1.0 if _read(layout, pool, message, 0, len(message), 0, now, reg) else 0.0
    return reg


@numba.njit(numba.float64[:, ::1](_I64S, _U8S, _RAW, _I64S, numba.int64, numba.float64), cache=True, nogil=True)
def _read_batch(layout, pool, buf, offsets, root, now):  # pragma: no cover - compiled
    """_read_features for the messages buf[offsets[i]:offsets[i + 1]], each of type node `root`:
    one column per slot (slot-major, ready to be columns), then the read flags."""
    slots = layout[_SLOTS]
    rows = offsets.shape[0] - 1
    out = np.zeros((slots + 1, rows), dtype=np.float64)
    reg = np.empty(slots, dtype=np.float64)
    for i in range(rows):
        reg[:] = 0.0
        if _read(layout, pool, buf, offsets[i], offsets[i + 1], root, now, reg):
            out[:slots, i] = reg
            out[slots, i] = 1.0
    return out


class WireProgram:
    """A Program whose features are read from one serialized message; reads[i] fills slot i
    (program.numbers, then program.strings)."""

    def __init__(self, program: Program, reads: Sequence[Read], day_ms: int = DAY_MS) -> None:
        width = len(program.numbers) + len(program.strings)
        if len(reads) != width:
            raise ValueError(f"expected {width} reads, one per feature slot, got {len(reads)}")
        self.program = program
        self.layout, self.pool, self._nodes = build_layout(reads, len(program.numbers), program.symbols,
                                                           program.compare_strings, day_ms)

        # run(message, now_ms as a float): the kernel with its arrays bound, for per-request callers
        # (no attribute lookups). Its answer is matching()'s, with [MALFORMED] for None.
        self.run = functools.partial(_run_wire, program.code, program.consts, self.layout, self.pool)

    def matching(self, message: bytes, now_ms: int) -> np.ndarray | None:
        """Indices of the outputs that are true, ascending; None when the message is malformed."""
        hits = self.run(message, float(now_ms))
        return None if hits.shape[0] == 1 and hits[0] == MALFORMED else hits

    def read(self, message: bytes, now_ms: int) -> np.ndarray | None:
        """The feature vector; None when the message is malformed."""
        features = _read_features(self.layout, self.pool, message, float(now_ms))
        return features[:-1] if features[-1] == 1.0 else None

    def read_many(self, messages: Sequence[bytes], now_ms: int,
                  root: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(columns, read): columns[slot] holds that feature for every message, read[i] is False
        where message i is malformed (its column entries are then 0). The messages are of the type
        at path `root` of the reads (say (1,) for the first field's sub-message); reads outside it
        keep their defaults."""
        slots = len(self.program.numbers) + len(self.program.strings)
        node = self._nodes.get(tuple(root), -1)
        if node < 0 or not messages:  # no read inside the messages' type: every feature has its default
            return np.zeros((slots, len(messages)), dtype=np.float64), np.ones(len(messages), dtype=np.bool_)
        offsets = np.zeros(len(messages) + 1, dtype=np.int64)
        np.cumsum([len(m) for m in messages], out=offsets[1:])
        out = _read_batch(self.layout, self.pool, b"".join(messages), offsets, node, float(now_ms))
        return out[:slots], out[slots] == 1.0
