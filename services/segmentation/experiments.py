"""Experiment definitions (validation) and assignment inside Evaluate.

A shopper's variant is GrowthBook's (hashing v2, `scoring/experiments/assign.py`) of the
experiment's seed and the shopper's *assignment unit*: the first anonymous id the profile ever
merged in (`aliases[0]`), else its `user_id`. Before a login the profile is the visitor's own
(`user_id` = the anonymous id, no aliases); `Identify` merges it into the customer's profile and
appends that id to `aliases` (services/profile/fold.py `merge_into`: the customer's existing
aliases first, then the merged profile's id), so the merged profile hashes the same id and keeps
its variant. See the README for the one case this cannot cover.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Iterable

from scoring.experiments.assign import SeedTable, assign_variants, bucket_ranges
from services.common.errors import FailedPrecondition, InvalidArgument
from services.segmentation import config as cfg
from vitrine.v1 import common_pb2, recommend_pb2, segment_pb2

_STRATEGIES = frozenset(recommend_pb2.Strategy.values())


def assignment_unit(profile: common_pb2.Profile) -> str:
    """The id a shopper is hashed by: stable across the merge of an anonymous visitor at login."""
    return profile.aliases[0] if profile.aliases else profile.user_id


def active(starts_ms: int, ends_ms: int, now: int) -> bool:
    return (starts_ms == 0 or starts_ms <= now) and (ends_ms == 0 or now < ends_ms)


def _overlap(a: segment_pb2.Experiment, b: segment_pb2.Experiment) -> bool:
    a_end = a.ends_ms or float("inf")
    b_end = b.ends_ms or float("inf")
    return a.starts_ms < b_end and b.starts_ms < a_end


def validate_experiment(experiment: segment_pb2.Experiment, others: Iterable[segment_pb2.Experiment],
                        segment_known: Callable[[str], bool]) -> None:
    """INVALID_ARGUMENT for a definition that is wrong in itself, FAILED_PRECONDITION for one that
    clashes with another experiment (the same slot over an overlapping window)."""
    if not cfg.ID_PATTERN.fullmatch(experiment.experiment_id):
        raise InvalidArgument(f"experiment_id {experiment.experiment_id!r} is invalid: use 1-64 characters "
                              "a-z 0-9 _ . - starting with a letter or digit")
    for value, limit, what in ((experiment.name, cfg.MAX_NAME_CHARS, "name"),
                               (experiment.description, cfg.MAX_DESCRIPTION_CHARS, "description"),
                               (experiment.slot_id, cfg.MAX_SLOT_CHARS, "slot_id"),
                               (experiment.hash_seed, cfg.MAX_HASH_SEED_CHARS, "hash_seed")):
        if len(value) > limit:
            raise InvalidArgument(f"{what} is {len(value)} characters; the limit is {limit}")
    if not experiment.slot_id:
        raise InvalidArgument("slot_id is empty: name the placement (Placement.slot_id) the experiment holds")
    n = len(experiment.variants)
    if not cfg.MIN_VARIANTS <= n <= cfg.MAX_VARIANTS:
        raise InvalidArgument(f"an experiment has {cfg.MIN_VARIANTS}..{cfg.MAX_VARIANTS} variants; got {n}")
    seen: set[str] = set()
    for v in experiment.variants:
        if not cfg.ID_PATTERN.fullmatch(v.variant_id):
            raise InvalidArgument(f"variant_id {v.variant_id!r} is invalid: use 1-64 characters a-z 0-9 _ . -")
        if v.variant_id in seen:
            raise InvalidArgument(f"variant_id {v.variant_id!r} appears twice")
        seen.add(v.variant_id)
        if not 0 < v.weight <= cfg.MAX_VARIANT_WEIGHT:
            raise InvalidArgument(f"variant {v.variant_id!r}: weight {v.weight} must be 1..{cfg.MAX_VARIANT_WEIGHT} "
                                  "(relative; 1 and 1 split evenly)")
        if v.strategy not in _STRATEGIES:
            raise InvalidArgument(f"variant {v.variant_id!r}: unknown strategy {v.strategy}")
        if not 0 <= v.k <= cfg.MAX_VARIANT_K:
            raise InvalidArgument(f"variant {v.variant_id!r}: k {v.k} must be 0..{cfg.MAX_VARIANT_K} "
                                  "(0 = the placement's own k)")
    if experiment.starts_ms < 0 or experiment.ends_ms < 0:
        raise InvalidArgument("starts_ms and ends_ms must be epoch milliseconds (0 = unbounded)")
    if experiment.starts_ms and experiment.ends_ms and experiment.starts_ms >= experiment.ends_ms:
        raise InvalidArgument(f"ends_ms {experiment.ends_ms} must be after starts_ms {experiment.starts_ms}")
    if len(experiment.segment_ids) > cfg.MAX_EXPERIMENT_SEGMENTS:
        raise InvalidArgument(f"an experiment names at most {cfg.MAX_EXPERIMENT_SEGMENTS} segments")
    for segment_id in experiment.segment_ids:
        if not segment_known(segment_id):
            raise InvalidArgument(f"segment_ids: no segment {segment_id!r}; create it first or use a built-in")
    for other in others:
        if (other.experiment_id != experiment.experiment_id and other.slot_id == experiment.slot_id
                and _overlap(other, experiment)):
            raise FailedPrecondition(f"experiment {other.experiment_id!r} already holds slot "
                                     f"{experiment.slot_id!r} over an overlapping window; end it first "
                                     "(one experiment per placement at a time)")


@dataclasses.dataclass(frozen=True)
class _Compiled:
    experiment: segment_pb2.Experiment
    ranges: tuple[tuple[float, float], ...]
    segments: frozenset[str]
    assignments: tuple[segment_pb2.Assignment, ...]   # one per variant, built once


class ExperimentSet:
    """Every stored experiment, compiled for assignment; immutable (replaced whole on a change)."""

    def __init__(self, experiments: Iterable[segment_pb2.Experiment] = ()) -> None:
        ordered = sorted(experiments, key=lambda e: e.experiment_id)
        self.by_id = {e.experiment_id: e for e in ordered}
        self._compiled = tuple(self._compile(e) for e in ordered)
        self._seeds = SeedTable([e.hash_seed or e.experiment_id for e in ordered], [c.ranges for c in self._compiled])
        # A shopper asks for page after page: keep the variants of recent ids (the set is immutable,
        # so an entry never goes stale; a changed set is a new object with an empty cache).
        self._variants = functools.lru_cache(maxsize=cfg.ASSIGNMENT_CACHE_SIZE)(self._hash)

    def _hash(self, unit_id: str) -> list[int]:
        return assign_variants(self._seeds, unit_id).tolist()

    @staticmethod
    def _compile(e: segment_pb2.Experiment) -> _Compiled:
        ranges = tuple(bucket_ranges([v.weight for v in e.variants]))
        assignments = tuple(segment_pb2.Assignment(experiment_id=e.experiment_id, variant_id=v.variant_id,
                                                   slot_id=e.slot_id, strategy=v.strategy, k=v.k)
                            for v in e.variants)
        return _Compiled(e, ranges, frozenset(e.segment_ids), assignments)

    def __len__(self) -> int:
        return len(self._compiled)

    def assign(self, unit_id: str, segment_ids: Collection[str], now: int) -> list[segment_pb2.Assignment]:
        """The running experiments this shopper enters (window, segment filter) with their variants."""
        if not self._compiled or not unit_id:
            return []
        live = [i for i, c in enumerate(self._compiled)
                if active(c.experiment.starts_ms, c.experiment.ends_ms, now)
                and (not c.segments or not c.segments.isdisjoint(segment_ids))]
        if not live:
            return []
        variants = self._variants(unit_id)
        out = []
        for i in live:
            variant = variants[i]
            if variant >= 0:
                out.append(self._compiled[i].assignments[variant])
        return out
