"""Windowed sums of per-day event counters, read straight from protobuf wire bytes.

A profile keeps one (day, type, count) counter per active day and event type as a repeated
sub-message. Reading them through the Python protobuf API costs ~0.7 us per counter;
this kernel walks the serialized message once and answers every (type, first_day) window
a rule set needs in a few microseconds. It knows only the wire format (field numbers are
parameters), not any generated class.
"""

from __future__ import annotations

import numba
import numpy as np

_BYTES = numba.types.Array(numba.uint8, 1, "C", readonly=True)  # np.frombuffer over bytes is read-only
# One message's `bytes` passed as is: saves the np.frombuffer (~1 us) of a per-request kernel call
# (_window_sums, _run_windows). _varint and _sum_message read only `len(buf)` and `buf[i]`, which
# both types have, and compile for both (scoring.rules.wire._read_batch walks a joined buffer as an array).
_RAW = numba.types.Bytes(numba.uint8, 1, "C", readonly=True)
_I64 = numba.int64


# Inlined into its callers (~600 calls for a heavy profile): about half the kernel's time.
@numba.njit([numba.types.UniTuple(_I64, 2)(b, _I64) for b in (_BYTES, _RAW)], cache=True, nogil=True,
            inline="always")
def _varint(buf: np.ndarray, pos: int) -> tuple[int, int]:  # pragma: no cover - compiled
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


@numba.njit([numba.boolean(b, _I64, _I64, _I64[::1], _I64[::1], _I64[::1], _I64, numba.float64[::1])
            for b in (_BYTES, _RAW)], cache=True, nogil=True)
def _sum_message(buf, start, stop, layout, types, first_days, today, out):  # pragma: no cover - compiled
    """Add one message's counters (bytes buf[start:stop]) into out[q]; False when malformed."""
    field, day_field, type_field, count_field = layout[0], layout[1], layout[2], layout[3]
    pos = start
    while pos < stop:
        key, pos = _varint(buf, pos)
        if pos < 0 or pos > stop:
            return False
        wire = key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            if pos < 0:
                return False
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos < 0 or length < 0 or pos + length > stop:
                return False
            end = pos + length
            if key >> 3 == field:
                day = np.int64(0)
                kind = np.int64(0)
                count = np.int64(0)
                while pos < end:
                    inner, pos = _varint(buf, pos)
                    if pos < 0 or pos >= end or inner & 7 != 0:
                        return False  # counters hold varints only
                    value, pos = _varint(buf, pos)
                    if pos < 0 or pos > end:
                        return False
                    value32 = np.int64(np.int32(value & 0xFFFFFFFF))
                    f = inner >> 3
                    if f == day_field:
                        day = value32
                    elif f == type_field:
                        kind = value32
                    elif f == count_field:
                        count = value32
                for q in range(types.shape[0]):
                    if kind == types[q] and first_days[q] <= day <= today:
                        out[q] += count
            pos = end
        else:
            return False
    return pos == stop


# One 1-d `spec` = layout (4 field numbers), then the query types, then their windows in days:
# numba's dispatcher types 1-d arguments much faster than 2-d ones, and each argument costs.
# No nogil on the per-request kernel: a few microseconds of work is not worth a GIL hand-off.
@numba.njit(numba.float64[::1](_RAW, _I64[::1], _I64), cache=True)
def _window_sums(buf, spec, today):  # pragma: no cover - compiled
    n = (spec.shape[0] - 4) // 2
    types = spec[4:4 + n]
    first_days = today - spec[4 + n:] + 1
    out = np.zeros(n, dtype=np.float64)
    if not _sum_message(buf, 0, len(buf), spec[:4], types, first_days, today, out):
        out[:] = np.nan
    return out


class WindowPlan:
    """The windows one rule set needs, prepared once: `plan.sums(message_bytes, today)`."""

    def __init__(self, *, field: int, day_field: int, type_field: int, count_field: int,
                 types: np.ndarray, days: np.ndarray) -> None:
        types = np.asarray(types, dtype=np.int64)
        days = np.asarray(days, dtype=np.int64)
        if types.ndim != 1 or types.shape != days.shape or (days < 1).any():
            raise ValueError("types and days must be 1-d arrays of one length, days >= 1")
        self.spec = np.concatenate([np.array([field, day_field, type_field, count_field], dtype=np.int64),
                                    types, days])

    def __len__(self) -> int:
        return (len(self.spec) - 4) // 2

    def sums(self, message: bytes, today: int) -> list[float] | None:
        """For each query q: the sum of `count` over the counters with type == types[q] and
        today - days[q] + 1 <= day <= today. None when the bytes are malformed."""
        out = _window_sums(message, self.spec, today).tolist()
        if out and out[0] != out[0]:  # NaN: malformed (a Python float test, ~10x cheaper than np.isnan)
            return None
        return out  # type: ignore[no-any-return]


def window_sums_reference(counters: list[tuple[int, int, int]], types: np.ndarray, days: np.ndarray,
                          today: int) -> np.ndarray:
    """The slow, obvious version over (day, type, count) tuples."""
    return np.array([float(sum(c for d, t, c in counters if t == kind and today - n + 1 <= d <= today))
                     for kind, n in zip(types.tolist(), days.tolist(), strict=True)], dtype=np.float64)
