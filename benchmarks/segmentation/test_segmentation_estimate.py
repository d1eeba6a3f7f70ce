"""EstimateSize over 1,000,000 profiles.

    .venv/bin/python -m pytest benchmarks/segmentation/test_segmentation_estimate.py --benchmark-only -s

Two parts, as in the service:
- after the scan: the compiled rule over whole NumPy columns of 1M rows (synthetic columns);
  goal <= 5 s;
- during the scan: turning each streamed profile (serialized bytes, as ScanProfiles delivers
  them) into the columns the rule needs, then evaluating 16,384-row chunks (count_matching over
  an in-memory stream of 1M messages, 2,000 distinct ones cycled). This is the per-profile cost
  the service pays while ScanProfiles streams, decoding included; gRPC transfer comes on top.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from benchmarks.segmentation.workload import NOW, shopper, store_rules, synthetic_columns
from scoring.rules import compile_rule
from services.segmentation.engine import count_matching
from services.segmentation.fields import SCHEMA
from vitrine.v1 import common_pb2 as c

ROWS = 1_000_000
RULES = {
    "simple": "visit_count >= 3",
    "api_example": 'visit_count >= 3 and context.device_type == "mobile" and category_affinity["running"] > 0.4 '
                   'and events("PURCHASE", days=30) == 0 and days_since(last_seen_ms) < 7',
    "vip": "rfm.r_score + rfm.f_score + rfm.m_score >= 13 and purchase_count >= 2",
    "in_lists": 'last_context.country in ["FR", "DE", "ES"] and (last_context.traffic_source in ["email", "paid"] '
                'or not registered) and total_spend * 2 > 300',
}


@pytest.mark.parametrize("name", list(RULES))
def test_columns_1m(benchmark, name: str) -> None:  # type: ignore[no-untyped-def]
    rule = compile_rule(RULES[name], SCHEMA)
    batch = synthetic_columns(rule, ROWS)
    mask = benchmark.pedantic(rule.evaluate_columns, args=(batch, NOW), rounds=5, iterations=1, warmup_rounds=1)
    print(f"\n{name}: {int(mask.sum())} of {ROWS} match")


def test_columns_1m_all_store_rules(benchmark) -> None:  # type: ignore[no-untyped-def]
    """All 100 benchmark store rules, one after the other, over 1M rows each."""
    rules = [compile_rule(s.rule, SCHEMA) for s in store_rules(100)]
    batches = [synthetic_columns(r, ROWS, seed=i) for i, r in enumerate(rules[:12])]

    def run() -> int:
        return sum(int(r.evaluate_columns(batches[i % 12], NOW).sum()) for i, r in enumerate(rules[:12]))

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["rules"] = 12


def _profiles(distinct: int = 2000) -> list[c.Profile]:
    base, _ = shopper()
    rng = np.random.default_rng(5)
    out = []
    for i in range(distinct):
        p = c.Profile()
        p.CopyFrom(base)
        p.user_id = f"u{i}"
        p.visit_count = int(rng.integers(0, 20))
        p.last_seen_ms = NOW - int(rng.integers(0, 30 * 86_400_000))
        p.category_affinity["running"] = float(rng.random())
        p.last_context.device_type = ["mobile", "desktop", "tablet"][i % 3]
        if i % 2:
            del p.daily_events[10:]
        out.append(p)
    return out


@pytest.mark.parametrize("rule_name", ["api_example", "events_only"])
def test_scan_1m_messages(benchmark, rule_name: str) -> None:  # type: ignore[no-untyped-def]
    """As the service receives them: ScanProfiles answers are serialized bytes."""
    source = {"api_example": RULES["api_example"].replace("context.", "last_context."),
              "events_only": 'events("PURCHASE", days=30) == 0 and events("PAGE_VIEW", days=7) >= 3'}[rule_name]
    rule = compile_rule(source, SCHEMA)
    messages = [p.SerializeToString() for p in _profiles()]

    async def stream() -> AsyncIterator[bytes]:
        started = time.perf_counter()
        for i in range(ROWS):
            if i and i % 200_000 == 0:
                print(f"  {i:>9,} profiles, {time.perf_counter() - started:.1f} s", flush=True)
            yield messages[i % len(messages)]

    gaps: list[float] = []

    async def counted_with_a_ticker() -> tuple[int, int]:
        """count_matching while a 1 ms ticker runs on the same loop: its longest gap is how long an
        Evaluate arriving during the estimate would wait for the loop."""
        done = False

        async def ticker() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.ensure_future(ticker())
        try:
            return await count_matching(rule, stream(), NOW)
        finally:
            done = True
            await task

    def run() -> tuple[int, int]:
        return asyncio.run(count_matching(rule, stream(), NOW))

    async def few() -> AsyncIterator[bytes]:
        for message in messages[:100]:
            yield message

    asyncio.run(count_matching(rule, few(), NOW))  # compile (or load) the kernels outside the timing

    matching, total = benchmark.pedantic(run, rounds=1, iterations=1)
    assert total == ROWS
    assert asyncio.run(counted_with_a_ticker()) == (matching, total)  # again, untimed, for the gaps
    gap = np.array(gaps) * 1000
    benchmark.extra_info.update({"loop_gap_max_ms": round(float(gap.max()), 1),
                                 "loop_gap_p99_ms": round(float(np.percentile(gap, 99)), 1)})
    print(f"\nscan path, {rule_name}: {matching} of {total} match; event loop gaps meanwhile: "
          f"max {gap.max():.1f} ms, p99 {np.percentile(gap, 99):.1f} ms")
