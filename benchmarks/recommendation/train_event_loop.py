"""How long a Train's CPU work stops the service's event loop (Recommend calls wait that long).

    .venv/bin/python -m benchmarks.recommendation.train_event_loop --sessions 400000 --items 100000

The service runs the session-kNN build and the re-view weight tuning of a Train in a worker
thread (asyncio.to_thread), so the event loop keeps serving. A compiled kernel that keeps the
GIL while it runs stops the loop for its whole duration anyway. This runs both steps on
synthetic sessions in a worker thread while a 1 ms ticker runs on the loop, and prints the
longest gaps between ticks.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from scoring.session_knn import build_neighbours, tune_repeat_weight


async def measure(sessions: list[np.ndarray], n_items: int) -> None:
    gaps: list[float] = []
    running = True

    async def ticker() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.ensure_future(ticker())
    t0 = time.perf_counter()
    await asyncio.to_thread(build_neighbours, sessions, n_items)
    t1 = time.perf_counter()
    print(f"build_neighbours {t1 - t0:.1f} s", flush=True)
    await asyncio.to_thread(tune_repeat_weight, sessions, n_items)
    t2 = time.perf_counter()
    print(f"tune_repeat_weight {t2 - t1:.1f} s", flush=True)
    running = False
    await task
    g = np.array(gaps) * 1000
    print(f"event loop gaps during the Train work: max {g.max():.0f} ms, p99 {np.percentile(g, 99):.0f} ms, "
          f"{int((g > 100).sum())} over 100 ms ({len(g)} ticks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=400_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sessions = [rng.integers(0, args.items, size=int(rng.integers(2, 12))) for _ in range(args.sessions)]
    build_neighbours(sessions[:1000], args.items)  # compile (or load) the kernels first
    tune_repeat_weight(sessions[:3000], args.items)
    asyncio.run(measure(sessions, args.items))


if __name__ == "__main__":
    main()
