"""Closed-loop load driver, run in its own process: `concurrency` callers each send the next
request as soon as the previous answer came, for a bounded time, on loopback only.

    python -m benchmarks.loadtest.closed_loop --target 127.0.0.1:50051 --mode personalize \
        --users users.txt --products 20000 --concurrency 16 --seconds 8

The maximum a server carries is what this measures (the issue's "closed-loop maximum"); the
open-loop generator (vitrine/loadtest/generator.py) measures latency at a fixed offered rate.
Personalize mode sends only Personalize (the generator's request mix of home, product and category
pages, two placements each) and counts an answer as *clean* when it is fully personalized
(`personalized` and no `fallback_reason`); echo mode sends a Personalize-sized payload to the
bare echo server. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import grpc
import numpy as np

from vitrine.loadtest.generator import (
    EchoWorkload,
    Workload,
    add_workload_arguments,
    check_local,
    open_channels,
    workload_users,
)

REQUEST_TIMEOUT_S = 2.0
MAX_CONCURRENCY = 512
MAX_SECONDS = 60.0


async def drive(args: argparse.Namespace, users: list[str]) -> dict[str, Any]:
    check_local(args.target)
    channels = open_channels(args.target)
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 10)
    personalize = args.mode == "personalize"
    workload = Workload(channels, users, args.products, args.seed, args.product_width) if personalize else None
    echo = EchoWorkload(channels) if not personalize else None
    clock = time.perf_counter
    measuring = [False]
    latencies: list[float] = []
    counts = {"answers": 0, "clean": 0, "degraded": 0, "errors": 0}
    reasons: dict[str, int] = {}
    end = [clock() + args.warmup + args.seconds]

    async def caller(index: int) -> None:
        i = index
        while clock() < end[0]:
            started = clock()
            try:
                if workload is not None:
                    stub = workload.stubs[i % len(workload.stubs)]
                    reply = await stub.Personalize(workload.pool[i % len(workload.pool)], timeout=REQUEST_TIMEOUT_S)
                    clean = reply.personalized and not reply.fallback_reason
                    if measuring[0] and not clean:
                        for reason in (reply.fallback_reason or "not_personalized").split(","):
                            reasons[reason] = reasons.get(reason, 0) + 1
                else:
                    assert echo is not None
                    await echo.calls[i % len(echo.calls)](echo.payload, timeout=REQUEST_TIMEOUT_S)
                    clean = True
            except grpc.aio.AioRpcError:
                if measuring[0]:
                    counts["errors"] += 1
                i += args.concurrency
                continue
            if measuring[0]:
                latencies.append(clock() - started)
                counts["answers"] += 1
                counts["clean" if clean else "degraded"] += 1
            i += args.concurrency

    tasks = [asyncio.create_task(caller(n)) for n in range(args.concurrency)]
    await asyncio.sleep(args.warmup)  # connections, caches, the servers' first-call paths
    measuring[0] = True
    started, started_unix = clock(), time.time()
    await asyncio.gather(*tasks)
    elapsed = clock() - started
    for channel in channels:
        await channel.close()
    arr = np.asarray(latencies or [0.0]) * 1000.0
    p50, p99 = np.percentile(arr, [50, 99])
    within = int(np.count_nonzero(arr <= args.within_ms)) if latencies else 0
    return {
        "mode": args.mode, "concurrency": args.concurrency, "seconds": elapsed,
        "started_unix": started_unix, "ended_unix": started_unix + elapsed,
        **counts,
        "answers_per_s": counts["answers"] / elapsed, "clean_per_s": counts["clean"] / elapsed,
        "degraded_share": counts["degraded"] / max(counts["answers"], 1),
        "degraded_reasons": reasons,
        "within_deadline_share": within / max(counts["answers"] + counts["errors"], 1),
        "p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(arr.max()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(parser, "personalize")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--within-ms", type=float, default=55.0,
                        help="answers at most this slow count as inside the deadline")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= MAX_CONCURRENCY or not 0 < args.seconds <= MAX_SECONDS:
        raise SystemExit(f"--concurrency within 1..{MAX_CONCURRENCY}, --seconds within (0, {MAX_SECONDS}]")
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    users = workload_users(args)
    result = asyncio.run(drive(args, users))
    print(f"[{args.mode} c={args.concurrency}] {result['answers_per_s']:.0f} answers/s, "
          f"{result['clean_per_s']:.0f} clean/s, p99 {result['p99_ms']:.1f} ms", file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
