"""Which partition, and which subject, an item of the log goes to.

The partition is a stable hash of the canonical user id (FNV-1a 64, the same in every process
and every Python version, unlike `hash()`). Each shopper has a subject of their own inside
their partition (`vitrine.events.<partition>.u<sha256 of the id, 32 hex>`), so erasure can
purge exactly that shopper's messages and no id appears in a subject. Erasure items go to
`vitrine.events.<partition>.erasure`, which a purge of the shopper's subject leaves alone.
"""

from __future__ import annotations

import hashlib

from services.eventlog import config as C

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return h


def partition_of(user_id: str, partitions: int) -> int:
    return fnv1a64(user_id.encode()) % partitions


def user_token(user_id: str) -> str:
    return "u" + hashlib.sha256(user_id.encode()).hexdigest()[:32]


def user_subject(user_id: str, partitions: int, prefix: str = C.SUBJECT_PREFIX) -> str:
    return f"{prefix}.{partition_of(user_id, partitions)}.{user_token(user_id)}"


def erasure_subject(partition: int, prefix: str = C.SUBJECT_PREFIX) -> str:
    return f"{prefix}.{partition}.erasure"


def partition_filter(partition: int, prefix: str = C.SUBJECT_PREFIX) -> str:
    return f"{prefix}.{partition}.>"


def owned_partitions(shard: int, shards: int, partitions: int) -> list[int]:
    """Partition p belongs to shard p mod shards."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} must be in [0, {shards})")
    return [p for p in range(partitions) if p % shards == shard]
