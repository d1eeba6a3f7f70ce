"""Evaluate with experiment assignment vs without, in process, same run.

    .venv/bin/python -m pytest benchmarks/segmentation/test_segmentation_experiments.py --benchmark-only -s

Both engines hold the same 100 store rules and 50 offers (benchmarks/segmentation/workload.py);
one also holds N running experiments on different slots (one of them behind a segment filter).
Each round answers as the servicer does: evaluate(), assign(), the EvaluateResponse built. The
rounds of the two engines alternate, so both see the same machine conditions; the figure to
read is the ratio of their percentiles. `same id`: one shopper asks again and again (the
variants come from the assignment cache); `new ids`: every round another shopper (every round
hashes), the profile's id is changed for both engines alike.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.segmentation.workload import NOW, shopper, store_engine
from services.segmentation.engine import SegmentEngine
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import recommend_pb2 as r
from vitrine.v1 import segment_pb2 as s

ROUNDS = 20_000


def experiments_on_slots(n: int) -> list[s.Experiment]:
    """`n` running experiments on different slots, the first behind a segment filter."""
    return [s.Experiment(
        experiment_id=f"exp-{i}", slot_id=f"slot-{i}", segment_ids=["returning_customer"] if i == 0 else [],
        variants=[s.Variant(variant_id="control", weight=1, strategy=r.TRENDING),
                  s.Variant(variant_id="test", weight=1, strategy=r.FOR_YOU, k=8)]) for i in range(n)]


def answer(engine: SegmentEngine, profile: c.Profile, context: c.Context) -> s.EvaluateResponse:
    ids, found = engine.evaluate(profile, context, NOW)
    return s.EvaluateResponse(segment_ids=ids, offers=found, assignments=engine.assign(profile, ids, NOW))


@pytest.mark.parametrize("ids", ["same id", "new ids"])
@pytest.mark.parametrize("experiments", [1, 5, 20])
def test_evaluate_with_experiments(benchmark, experiments: int, ids: str) -> None:  # type: ignore[no-untyped-def]
    plain, tested = store_engine(), store_engine(experiments_on_slots(experiments))
    profile, context = shopper()
    profile.user_id = "shopper-123456"
    profile.aliases.append("anon-7f3c2a9e")
    assert len(answer(tested, profile, context).assignments) == experiments
    clock = time.perf_counter_ns
    times = np.empty((2, ROUNDS), dtype=np.int64)
    for _ in range(500):
        answer(plain, profile, context)
        answer(tested, profile, context)
    units = [f"anon-{i:08x}" for i in range(ROUNDS)] if ids == "new ids" else None
    for i in range(ROUNDS):
        if units is not None:
            profile.aliases[0] = units[i]
        t0 = clock()
        answer(plain, profile, context)
        t1 = clock()
        answer(tested, profile, context)
        t2 = clock()
        times[0, i], times[1, i] = t1 - t0, t2 - t1
    base, with_exp = (np.percentile(t / 1e3, [50, 99]) for t in times)
    benchmark.pedantic(answer, args=(tested, profile, context), rounds=1000, iterations=1)
    benchmark.extra_info.update({"experiments": experiments, "ids": ids, "without_p50_us": round(base[0], 1),
                                 "without_p99_us": round(base[1], 1), "with_p50_us": round(with_exp[0], 1),
                                 "with_p99_us": round(with_exp[1], 1),
                                 "p50_ratio": round(with_exp[0] / base[0], 2),
                                 "p99_ratio": round(with_exp[1] / base[1], 2)})
    print(f"\n{experiments} experiments, {ids}: without p50 {base[0]:.1f} / p99 {base[1]:.1f} us | with p50 "
          f"{with_exp[0]:.1f} / p99 {with_exp[1]:.1f} us | ratio p50 {with_exp[0] / base[0]:.2f}, "
          f"p99 {with_exp[1] / base[1]:.2f}")
