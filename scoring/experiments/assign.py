"""Deterministic experiment assignment, bit for bit as GrowthBook does it (hashing version 2).

growthbook/growthbook-python `growthbook/core.py` (spec 0.7.1):

    fnv1a32(s)  = FNV-1a 32 over the string's code points (`ord(ch)`, not UTF-8 bytes)
    gbhash(seed, value, 2) = (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    getBucketRanges(n, coverage, weights): cumulative [start, start + coverage * w) per variation
    chooseVariation(h, ranges): the first range with start <= h < end, else -1

Version 2 hashes the decimal string of the first hash again because version 1's
`fnv1a32(value + seed) % 1000` was biased for seeds and values that share a prefix; the second
round spreads them. The published test vectors of `tests/cases.json` are checked in
tests/segmentation/test_experiment_assign.py.

`hash_buckets` is the Numba kernel Evaluate uses (one call for every running experiment of a
shopper); `hash_buckets_reference` is the obvious Python version the agreement test holds it to.
Buckets are the integer 0..9999 (`h * 10000`); ranges compare h = bucket / 10000 as floats
exactly like GrowthBook, so a shopper gets the variation GrowthBook would give.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit, types

HASH_BUCKETS = 10_000          # version 2 resolution: h = bucket / HASH_BUCKETS
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK = 0xFFFFFFFF


def fnv1a32(text: str) -> int:
    """FNV-1a 32 over code points, as GrowthBook's `fnv1a32`."""
    h = _FNV_OFFSET
    for ch in text:
        h = ((h ^ ord(ch)) * _FNV_PRIME) & _MASK
    return h


def gb_hash(seed: str, value: str, version: int = 2) -> float | None:
    """GrowthBook's `gbhash`: a number in [0, 1); None for an unknown version."""
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % HASH_BUCKETS) / HASH_BUCKETS
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def bucket_ranges(weights: Sequence[float], coverage: float = 1.0) -> list[tuple[float, float]]:
    """GrowthBook's `getBucketRanges` for explicit weights (normalised here from relative weights).

    Contiguous ranges in variant order: changing 50/50 to 40/60 moves only the shoppers with
    h in [0.4, 0.5) (from the first to the second variant), the fewest any split can move; but a
    change in the middle of a list of three or more shifts the later boundaries too."""
    total = float(sum(weights))
    if not weights or total <= 0:
        return []
    coverage = min(max(coverage, 0.0), 1.0)
    ranges = []
    cumulative = 0.0
    for w in weights:
        start = cumulative
        cumulative += w / total
        ranges.append((start, start + coverage * (w / total)))
    return ranges


def choose_variation(h: float, ranges: Sequence[tuple[float, float]]) -> int:
    """GrowthBook's `chooseVariation`: index of the range holding h, -1 when none does."""
    for i, (lo, hi) in enumerate(ranges):
        if lo <= h < hi:
            return i
    return -1


def code_points(text: str) -> np.ndarray:
    """A string as its code points (uint32), the kernel's input."""
    return np.frombuffer(bytearray(text.encode("utf-32-le")), dtype=np.uint32)


@njit(types.int32[:](types.uint32[:], types.uint32[:], types.int64[:]), cache=True, nogil=True)
def _hash_buckets(unit: np.ndarray, seeds: np.ndarray, seed_ends: np.ndarray) -> np.ndarray:  # pragma: no cover
    # For experiment e: FNV-1a over seeds[seed_ends[e-1]:seed_ends[e]] then `unit`, then FNV-1a
    # again over that hash's decimal digits; the bucket is that mod 10000.
    out = np.empty(seed_ends.size, np.int32)
    digits = np.empty(10, np.uint32)
    start = 0
    for e in range(seed_ends.size):
        h = np.uint32(_FNV_OFFSET)
        for i in range(start, seed_ends[e]):
            h = np.uint32((h ^ seeds[i]) * np.uint32(_FNV_PRIME))
        for i in range(unit.size):
            h = np.uint32((h ^ unit[i]) * np.uint32(_FNV_PRIME))
        start = seed_ends[e]
        n = 0
        v = np.uint64(h)
        while True:
            digits[n] = np.uint32(48 + v % 10)
            n += 1
            v //= 10
            if v == 0:
                break
        g = np.uint32(_FNV_OFFSET)
        for i in range(n - 1, -1, -1):
            g = np.uint32((g ^ digits[i]) * np.uint32(_FNV_PRIME))
        out[e] = np.int32(g % HASH_BUCKETS)
    return out


@njit(types.int8[:](types.uint32[:], types.uint32[:], types.int64[:], types.int8[:, :]), cache=True, nogil=True)
def _variants(unit: np.ndarray, seeds: np.ndarray, seed_ends: np.ndarray,
              tables: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    buckets = _hash_buckets(unit, seeds, seed_ends)
    out = np.empty(buckets.size, np.int8)
    for e in range(buckets.size):
        out[e] = tables[e, buckets[e]]
    return out


def bucket_table(ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """choose_variation(b / 10000, ranges) for every bucket b: the kernel looks the variant up
    instead of comparing floats, with the very comparisons GrowthBook makes done once here."""
    table = np.empty(HASH_BUCKETS, np.int8)
    for b in range(HASH_BUCKETS):
        table[b] = choose_variation(b / HASH_BUCKETS, ranges)
    return table


class SeedTable:
    """The seeds of a fixed list of experiments, packed once for the kernel, and (given their
    bucket ranges) each experiment's bucket -> variant table."""

    def __init__(self, seeds: Sequence[str], ranges: Sequence[Sequence[tuple[float, float]]] | None = None) -> None:
        self.seeds = tuple(seeds)
        parts = [code_points(s) for s in self.seeds]
        self.points = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
        self.ends = np.cumsum([p.size for p in parts], dtype=np.int64) if parts else np.zeros(0, np.int64)
        self.tables = (np.stack([bucket_table(r) for r in ranges]) if ranges
                       else np.zeros((0, HASH_BUCKETS), np.int8))
        if ranges is not None and len(ranges) != len(self.seeds):
            raise ValueError("one list of ranges per seed")


def hash_buckets(table: SeedTable, unit_id: str) -> np.ndarray:
    """Bucket 0..9999 of `unit_id` in every experiment of `table` (GrowthBook v2 hash * 10000)."""
    if table.ends.size == 0:
        return np.zeros(0, np.int32)
    return _hash_buckets(code_points(unit_id), table.points, table.ends)


def assign_variants(table: SeedTable, unit_id: str) -> np.ndarray:
    """Variant index of `unit_id` in every experiment of `table` (-1: in no range), one kernel call."""
    if table.ends.size == 0:
        return np.zeros(0, np.int8)
    return _variants(code_points(unit_id), table.points, table.ends, table.tables)


def hash_buckets_reference(seeds: Sequence[str], unit_id: str) -> list[int]:
    """The same in plain Python, from `fnv1a32`: the oracle of the kernel."""
    return [fnv1a32(str(fnv1a32(seed + unit_id))) % HASH_BUCKETS for seed in seeds]
