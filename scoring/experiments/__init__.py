"""Experiment assignment (GrowthBook-compatible hashing, `assign.py`) and nothing that needs a service."""

from scoring.experiments.assign import (
    HASH_BUCKETS,
    bucket_ranges,
    choose_variation,
    fnv1a32,
    gb_hash,
    hash_buckets,
    hash_buckets_reference,
)

__all__ = ["HASH_BUCKETS", "bucket_ranges", "choose_variation", "fnv1a32", "gb_hash", "hash_buckets",
           "hash_buckets_reference"]
