"""Experiment assignment (GrowthBook-compatible hashing, `assign.py`) and nothing that needs a service."""

from scoring.experiments.assign import (
    HASH_BUCKETS,
    SeedTable,
    assign_variants,
    bucket_ranges,
    bucket_table,
    choose_variation,
    fnv1a32,
    gb_hash,
    hash_buckets,
    hash_buckets_reference,
)

__all__ = ["HASH_BUCKETS", "SeedTable", "assign_variants", "bucket_ranges", "bucket_table", "choose_variation",
           "fnv1a32", "gb_hash", "hash_buckets", "hash_buckets_reference"]
