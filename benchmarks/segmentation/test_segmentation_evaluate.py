"""Evaluate with 100 store-defined rules (+ 8 built-in rules, 4 context families, 50 offers),
in process, no gRPC.

    .venv/bin/python -m pytest benchmarks/segmentation/test_segmentation_evaluate.py --benchmark-only -s

Goal: p99 <= 100 us per Evaluate. Each pytest-benchmark round is one call, so the round times
are the wall-clock latency distribution. On a shared machine wall-clock tails measure the
neighbours as much as the code, so each test also times 20,000 calls with the thread's CPU
clock (time.thread_time_ns: preemption excluded, GC pauses included), and a baseline in the
same run: a fixed compiled loop as long as Evaluate's median, whose p99 is the machine's own
tail for a call of that length. All are printed and stored in extra_info.
"""

from __future__ import annotations

import time

import numba
import numpy as np
import pytest

from benchmarks.segmentation.workload import NOW, shopper, store_engine, typical_shopper
from services.segmentation.engine import SegmentEngine
from vitrine.v1 import common_pb2 as c

ROUNDS = 20_000


CASES = {
    "heavy": shopper,                      # 14 visits, 20 categories, 45 daily counters, cart, rfm
    "typical": typical_shopper,
    "new_visitor": lambda: (c.Profile(), c.Context(device_type="mobile")),
}


@numba.njit(cache=True)
def _spin(n: int) -> float:  # pragma: no cover - compiled
    x = 0.0
    for i in range(n):
        x += (i * 0.5) % 7.0
    return x


def _spin_percentiles(target_us: float) -> tuple[int, np.ndarray]:
    """The same-run baseline: a fixed compiled loop sized to take Evaluate's median, timed the same
    way. Its tail is what this machine adds to any call of that length (preemption, SMT
    neighbours, interrupts); Evaluate's p99 over it says how much of the tail is the code's."""
    clock = time.perf_counter_ns
    _spin(1000)
    t0 = clock()
    _spin(100_000)
    n = max(1, int(100_000 * target_us * 1e3 / (clock() - t0)))
    samples = np.empty(ROUNDS, dtype=np.int64)
    for i in range(ROUNDS):
        t0 = clock()
        _spin(n)
        samples[i] = clock() - t0
    return n, np.percentile(samples / 1e3, [50, 99, 99.9])


def _cpu_percentiles(engine: SegmentEngine, profile: c.Profile, context: c.Context) -> np.ndarray:
    clock = time.thread_time_ns
    samples = np.empty(ROUNDS, dtype=np.int64)
    for i in range(ROUNDS):
        t0 = clock()
        engine.evaluate(profile, context, NOW)
        samples[i] = clock() - t0
    return np.percentile(samples / 1e3, [50, 99, 99.9])


@pytest.mark.parametrize("case", list(CASES))
def test_evaluate_100_rules(benchmark, case: str) -> None:  # type: ignore[no-untyped-def]
    engine = store_engine()
    profile, context = CASES[case]()
    ids, matched_offers = engine.evaluate(profile, context, NOW)
    benchmark.pedantic(engine.evaluate, args=(profile, context, NOW), rounds=ROUNDS, iterations=1,
                       warmup_rounds=500)
    wall = np.percentile(np.array(benchmark.stats.stats.data) * 1e6, [50, 99, 99.9])
    cpu = _cpu_percentiles(engine, profile, context)
    _, spin = _spin_percentiles(wall[0])
    benchmark.extra_info.update({
        "baseline_p50_us": round(spin[0], 1), "baseline_p99_us": round(spin[1], 1),
        "p99_over_baseline_p99": round(wall[1] / spin[1], 2),
        "segments": len(ids), "offers": len(matched_offers),
        "wall_p50_us": round(wall[0], 1), "wall_p99_us": round(wall[1], 1), "wall_p99.9_us": round(wall[2], 1),
        "cpu_p50_us": round(cpu[0], 1), "cpu_p99_us": round(cpu[1], 1), "cpu_p99.9_us": round(cpu[2], 1),
    })
    print(f"\n{case}: {len(ids)} segments, {len(matched_offers)} offers | wall p50 {wall[0]:.1f} us, "
          f"p99 {wall[1]:.1f} us, p99.9 {wall[2]:.1f} us | cpu p50 {cpu[0]:.1f} us, p99 {cpu[1]:.1f} us, "
          f"p99.9 {cpu[2]:.1f} us | baseline loop p50 {spin[0]:.1f} us, p99 {spin[1]:.1f} us "
          f"(Evaluate p99 / baseline p99 {wall[1] / spin[1]:.2f})")
