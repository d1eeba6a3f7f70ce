"""Soak: the suite as real processes under a steady mixed load for a bounded time, recording each
process's RSS, open file descriptors and the load's p99 latency over time (#19).

    .venv/bin/python -m benchmarks.reliability.soak --minutes 10 --out benchmarks/reliability/soak

Load: a fixed rate (default 100 requests/s) of 80 % Personalize (known and unknown shoppers,
deadline 200 ms) and 20 % Track (new events, some shoppers repeated), on 127.0.0.1 only, from one
asyncio client with a bounded number in flight. Samples every `--sample-seconds`. Writes
`soak.json` and `soak.png` (RSS, descriptors and p99 per window) to `--out`; prints the growth
of RSS after the warm-up (the first `--warmup-fraction` of the run) and of descriptors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from vitrine.ports import free_ports
from vitrine.supervisor import DEFAULT_PORTS, Suite, SuiteLayout
from vitrine.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, profile_pb2

MAX_MINUTES = 60.0  # hard bound, whatever the flag says
MAX_IN_FLIGHT = 32


def descendants(pid: int) -> list[int]:
    """`pid` and its child processes (the profile writer), by parent pid in /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parents.items() if p in frontier]
        out += frontier
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sample_processes(suite: Suite) -> dict[str, dict[str, int]]:
    out = {}
    for child in suite.children:
        if child.pid is None:
            continue
        pids = descendants(child.pid)
        try:
            out[child.name] = {"rss_kib": sum(rss_kib(p) for p in pids), "fds": sum(fd_count(p) for p in pids),
                               "processes": len(pids)}
        except OSError:
            continue
    return out


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def run_load(gateway: str, users: list[str], seconds: float, rate: float, sample_seconds: float,
                   suite: Suite) -> list[dict[str, Any]]:
    rng = random.Random(19)
    samples: list[dict[str, Any]] = []
    window: list[float] = []
    errors = {"n": 0}
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)

        async def one(i: int) -> None:
            async with in_flight:
                started = time.perf_counter()
                try:
                    if rng.random() < 0.8:
                        user = rng.choice(users) if rng.random() < 0.9 else f"soak-unknown-{i}"
                        await stub.Personalize(gateway_pb2.PersonalizeRequest(
                            user_id=user, page_type="home", deadline_ms=200), timeout=2)
                    else:
                        event = common_pb2.Event(event_id=f"soak-{i}", user_id=f"soak-u{i % 500}",
                                                 type=common_pb2.PRODUCT_VIEW, product_id=f"p{i % 200:06d}")
                        await stub.Track(profile_pb2.TrackRequest(event=event), timeout=2)
                except grpc.aio.AioRpcError:
                    errors["n"] += 1
                window.append((time.perf_counter() - started) * 1000)

        started = time.monotonic()
        next_sample = started
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        with tqdm(total=int(seconds), unit="s", desc="soak") as bar:
            while (now := time.monotonic()) - started < seconds:
                due = int((now - started) * rate)
                while i < due:
                    task = asyncio.ensure_future(one(i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1
                if now >= next_sample:
                    samples.append({"t": round(now - started, 1), "requests": i, "errors": errors["n"],
                                    "p99_ms": round(p99(window), 2),
                                    "p50_ms": round(statistics.median(window), 2) if window else 0.0,
                                    "processes": sample_processes(suite)})
                    window.clear()
                    next_sample += sample_seconds
                if int(now - started) > bar.n:
                    bar.update(int(now - started) - bar.n)
                await asyncio.sleep(1.0 / rate)  # pacing of an open-loop load generator
            await asyncio.gather(*tasks)
    samples.append({"t": round(time.monotonic() - started, 1), "requests": i, "errors": errors["n"],
                    "p99_ms": round(p99(window), 2), "p50_ms": round(statistics.median(window), 2) if window else 0,
                    "processes": sample_processes(suite)})
    return samples


def summarize(samples: list[dict[str, Any]], warmup_fraction: float) -> dict[str, Any]:
    warm = samples[max(1, int(len(samples) * warmup_fraction))]
    last = samples[-1]
    first = samples[0]
    out: dict[str, Any] = {"requests": last["requests"], "errors": last["errors"], "processes": {}}
    for name, end in last["processes"].items():
        start = warm["processes"].get(name)
        begin = first["processes"].get(name)
        if not start:
            continue
        out["processes"][name] = {
            "rss_mib_start": round(begin["rss_kib"] / 1024, 1),
            "rss_mib_after_warmup": round(start["rss_kib"] / 1024, 1),
            "rss_mib_end": round(end["rss_kib"] / 1024, 1),
            "rss_growth_after_warmup_pct": round(100 * (end["rss_kib"] - start["rss_kib"]) / start["rss_kib"], 2),
            "fds_start": begin["fds"], "fds_after_warmup": start["fds"], "fds_end": end["fds"],
        }
    p99s = [s["p99_ms"] for s in samples[1:-1]] or [0.0]
    third = max(1, len(p99s) // 3)
    out["p99_ms_first_third"] = round(statistics.median(p99s[:third]), 1)
    out["p99_ms_last_third"] = round(statistics.median(p99s[-third:]), 1)
    return out


def plot(samples: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    names = list(samples[-1]["processes"])
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for name in names:
        axes[0].plot(t, [s["processes"].get(name, {}).get("rss_kib", 0) / 1024 for s in samples], label=name)
        axes[1].plot(t, [s["processes"].get(name, {}).get("fds", 0) for s in samples], label=name)
    axes[2].plot(t, [s["p99_ms"] for s in samples], label="p99")
    axes[2].plot(t, [s["p50_ms"] for s in samples], label="p50")
    axes[0].set_ylabel("RSS, MiB")
    axes[1].set_ylabel("open descriptors")
    axes[2].set_ylabel("latency per window, ms")
    axes[2].set_xlabel("seconds")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("Vitrine soak: RSS, descriptors and latency over time")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help=f"duration (default 1; at most {MAX_MINUTES:g})")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="sampling interval (default 10)")
    parser.add_argument("--warmup-fraction", type=float, default=0.2, help="growth is measured after this part")
    parser.add_argument("--out", default="benchmarks/reliability/soak", help="directory for soak.json and soak.png")
    args = parser.parse_args(argv)
    seconds = min(args.minutes, MAX_MINUTES) * 60
    from vitrine.demo.config import DemoConfig
    from vitrine.demo.loader import load_demo

    with tempfile.TemporaryDirectory(prefix="vitrine-soak-") as tmp:
        layout = SuiteLayout(data_dir=Path(tmp), ports=dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)),
                                                                  strict=True)))
        with Suite(layout, env={"VITRINE_LOG_LEVEL": "WARNING"}) as suite:
            asyncio.run(load_demo(DemoConfig(n_products=200, n_shoppers=300, seed=19),
                                  profile_addresses=layout.profile_addresses(),
                                  gateway_address=layout.address("gateway"),
                                  segmentation_address=layout.address("segmentation"),
                                  recommendation_address=layout.address("recommendation"), progress=False))
            users = [f"u{i:06d}" for i in range(300)]
            from vitrine.v1 import profile_pb2_grpc

            with grpc.insecure_channel(layout.profile_addresses()[0]) as channel:
                stub = profile_pb2_grpc.ProfileServiceStub(channel)
                users = [p.user_id for p in stub.ScanProfiles(profile_pb2.ScanProfilesRequest(limit=300), timeout=30)]
            samples = asyncio.run(run_load(layout.address("gateway"), users, seconds, args.rate,
                                           args.sample_seconds, suite))
            restarts = {c.name: c.restarts for c in suite.children}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"minutes": seconds / 60, "rate": args.rate, "summary": summarize(samples, args.warmup_fraction),
              "restarts": restarts, "samples": samples}
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    plot(samples, out / "soak.png")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
