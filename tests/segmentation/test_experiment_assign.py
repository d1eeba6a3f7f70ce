"""Assignment: GrowthBook's published vectors, the Numba kernel against its reference, balance,
weights, stability when weights change, and stickiness across the merge at login."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from scoring.experiments.assign import (
    HASH_BUCKETS,
    SeedTable,
    assign_variants,
    bucket_ranges,
    choose_variation,
    gb_hash,
    hash_buckets,
    hash_buckets_reference,
)
from services.segmentation.experiments import ExperimentSet, assignment_unit
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import recommend_pb2 as r
from vitrine.v1 import segment_pb2 as s

CASES = json.loads((Path(__file__).parent / "data" / "growthbook_cases.json").read_text())
NOW = 1_763_900_000_000


@pytest.mark.parametrize(("seed", "value", "version", "expected"), CASES["hash"])
def test_growthbook_hash_vectors(seed: str, value: str, version: int, expected: float | None) -> None:
    assert gb_hash(seed, value, version) == expected


# GrowthBook takes weights that sum to 1 and falls back to equal weights otherwise; ours are relative
# integers normalised first, so only the cases with proper weights (or none) apply.
_RELATIVE = ("weights sum below 1", "weights sum above 1", "weights.length not equal to num variations",
             "weights sum almost equals 1")


@pytest.mark.parametrize(("name", "args", "expected"), [c for c in CASES["getBucketRange"] if c[0] not in _RELATIVE])
def test_growthbook_bucket_ranges(name: str, args: list, expected: list) -> None:
    n, coverage, weights = args
    got = bucket_ranges(weights or [1.0] * n, coverage)
    assert np.allclose(got, expected), name


@pytest.mark.parametrize(("name", "n", "ranges", "expected"), CASES["chooseVariation"])
def test_growthbook_choose_variation(name: str, n: float, ranges: list, expected: int) -> None:
    assert choose_variation(n, [tuple(x) for x in ranges]) == expected


def _random_text(rng: random.Random, n: int) -> str:
    alphabet = "abcXYZ019-_:@ éü€日本𝄞"
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_kernel_agrees_with_reference() -> None:
    rng = random.Random(7)
    for _ in range(300):
        seeds = [_random_text(rng, rng.randint(0, 20)) for _ in range(rng.randint(1, 6))]
        unit = _random_text(rng, rng.randint(0, 40))
        assert hash_buckets(SeedTable(seeds), unit).tolist() == hash_buckets_reference(seeds, unit)
    # and both are GrowthBook's v2 hash
    assert hash_buckets(SeedTable(["seed"]), "a")[0] / HASH_BUCKETS == gb_hash("seed", "a", 2)


def test_variant_kernel_agrees_with_growthbook_reference() -> None:
    """The kernel's bucket -> variant tables give exactly chooseVariation(gbhash(seed, id, 2), ranges)."""
    rng = random.Random(9)
    for _ in range(60):
        seeds = [_random_text(rng, rng.randint(1, 12)) for _ in range(rng.randint(1, 5))]
        ranges = [bucket_ranges([rng.randint(1, 9) for _ in range(rng.randint(2, 5))]) for _ in seeds]
        table = SeedTable(seeds, ranges)
        for _ in range(50):
            unit = _random_text(rng, rng.randint(1, 30))
            expected = [choose_variation(gb_hash(seed, unit, 2), r) for seed, r in zip(seeds, ranges, strict=True)]
            assert assign_variants(table, unit).tolist() == expected


def experiment(weights: list[int], **fields: object) -> s.Experiment:
    variants = [s.Variant(variant_id=f"v{i}", weight=w, strategy=r.FOR_YOU) for i, w in enumerate(weights)]
    return s.Experiment(experiment_id=str(fields.pop("experiment_id", "exp")), slot_id="home-top",
                        variants=variants, **fields)  # type: ignore[arg-type]


def counts(weights: list[int], n: int = 100_000, **fields: object) -> tuple[list[int], list[str]]:
    exps = ExperimentSet([experiment(weights, **fields)])
    got = []
    for i in range(n):
        (a,) = exps.assign(f"visitor-{i}", [], NOW)
        got.append(a.variant_id)
    return [got.count(f"v{i}") for i in range(len(weights))], got


def test_balanced_within_sampling_error_over_100k_ids() -> None:
    observed, _ = counts([1, 1])
    assert stats.chisquare(observed).pvalue > 0.001, observed
    assert abs(observed[0] - 50_000) < 4 * (100_000 * 0.25) ** 0.5


def test_weights_respected() -> None:
    observed, _ = counts([1, 3, 6])
    expected = [10_000, 30_000, 60_000]
    assert stats.chisquare(observed, expected).pvalue > 0.001, observed


def test_deterministic_and_seeded() -> None:
    _, first = counts([1, 1], n=2000)
    _, again = counts([1, 1], n=2000)
    assert first == again
    _, reseeded = counts([1, 1], n=2000, hash_seed="exp-round-2")
    moved = sum(a != b for a, b in zip(first, reseeded, strict=True))
    assert 800 < moved < 1200  # a new seed re-randomises: about half change


def test_weight_change_moves_only_the_boundary() -> None:
    """50/50 -> 40/60: exactly the ids hashing into [0.4, 0.5) move, all from v0 to v1."""
    _, before = counts([1, 1], n=20_000)
    _, after = counts([2, 3], n=20_000)
    seeds = SeedTable(["exp"])
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        h = hash_buckets(seeds, f"visitor-{i}")[0] / HASH_BUCKETS
        assert (a != b) == (0.4 <= h < 0.5)
        if a != b:
            assert (a, b) == ("v0", "v1")


def test_window_and_segment_filter() -> None:
    exps = ExperimentSet([experiment([1, 1], starts_ms=NOW, ends_ms=NOW + 1000, segment_ids=["vip", "geo:FR"])])
    assert exps.assign("u", ["vip"], NOW - 1) == []
    assert exps.assign("u", ["vip"], NOW + 1000) == []
    assert exps.assign("u", ["guest"], NOW) == []
    assert [a.slot_id for a in exps.assign("u", ["geo:FR"], NOW)] == ["home-top"]
    assert exps.assign("", ["vip"], NOW) == []  # nobody to hash


def test_sticky_across_login_merge() -> None:
    """The anonymous visitor's profile and the customer's merged profile hash the same id."""
    exps = ExperimentSet([experiment([1, 1, 1], experiment_id="three"), experiment([1, 1], experiment_id="two")])
    for i in range(500):
        anon = c.Profile(user_id=f"anon-{i}")
        merged = c.Profile(user_id=f"cust-{i}", customer_id=f"cust-{i}", registered=True, aliases=[f"anon-{i}"])
        later = c.Profile(user_id=f"cust-{i}", aliases=[f"anon-{i}", f"anon-b-{i}"])  # a second device merged
        before = exps.assign(assignment_unit(anon), [], NOW)
        assert before == exps.assign(assignment_unit(merged), [], NOW) == exps.assign(assignment_unit(later), [], NOW)
