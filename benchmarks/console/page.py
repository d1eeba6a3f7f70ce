"""How long the console's customer page takes for a demo customer, the whole suite local.

Starts the suite as `vitrine up` does (every service its own process, the console included,
on free loopback ports), loads the demo store, logs in, then asks for the customer page of
`--customers` demo customers `--rounds` times each, one request at a time (an operator clicks;
nothing runs in parallel but the page's own backend calls). Beside it, in the same run:
  * /healthz of the console: the floor of one HTTP request to this Starlette + uvicorn process;
  * GetProfile through the gateway: one backend round trip, what the page starts with.
Reports p50 / p90 / p99 / max wall time in ms, the console's CPU time per page (from
/proc), and the page size. Bounded by customers x rounds requests; deletes its data directory.

    .venv/bin/python -m benchmarks.console.page --customers 50 --rounds 4 [--heaviest]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx2
from tqdm import tqdm

from vitrine.loadtest.cpu import cpu_seconds
from vitrine.ports import free_port
from vitrine.supervisor import DEFAULT_PORTS, Suite, SuiteLayout
from vitrine.v1 import gateway_pb2_grpc, profile_pb2, profile_pb2_grpc

PASSWORD = "bench-password"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": statistics.median(ordered), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1]}


def line(name: str, samples_ms: list[float], extra: str = "") -> str:
    p = percentiles(samples_ms)
    return (f"{name:<34} n={len(samples_ms):<5} p50 {p['p50']:7.2f}  p90 {p['p90']:7.2f}  p99 {p['p99']:7.2f}  "
            f"max {p['max']:7.2f} ms {extra}")


async def demo_customers(profile: str, n: int, heaviest: bool) -> list[str]:
    """`n` registered demo customers: the first in key order, or those with the most events."""
    found: list[tuple[int, str]] = []
    async with grpc.aio.insecure_channel(profile) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        async for p in stub.ScanProfiles(profile_pb2.ScanProfilesRequest(), timeout=120):
            if p.registered:
                found.append((p.event_count, p.user_id))
                if len(found) >= n and not heaviest:
                    break
    if heaviest:
        found.sort(reverse=True)
    return [user_id for _, user_id in found[:n]]


async def get_profile_times(gateway: str, ids: list[str], rounds: int) -> list[float]:
    out = []
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        for _ in range(rounds):
            for user_id in ids:
                started = time.perf_counter()
                await stub.GetProfile(profile_pb2.GetProfileRequest(user_id=user_id), timeout=5)
                out.append((time.perf_counter() - started) * 1000)
    return out


def run(args: argparse.Namespace, data_dir: Path) -> None:
    from vitrine.demo.config import DemoConfig
    from vitrine.demo.loader import load_demo

    ports = {name: free_port() for name in DEFAULT_PORTS}
    layout = SuiteLayout(data_dir=data_dir, ports=ports)
    env = {"VITRINE_CONSOLE_PASSWORD": PASSWORD, "VITRINE_LOG_LEVEL": "WARNING"}
    print(f"starting the suite in {data_dir} ...", file=sys.stderr)
    with Suite(layout, env=env) as suite:
        if "journeys" in layout.ports:  # as vitrine up: journeys first, so the events produce messages
            from vitrine.demo.journeys import put_demo_journeys

            asyncio.run(put_demo_journeys(layout.address("journeys")))
        demo = DemoConfig(n_products=args.products, n_shoppers=args.shoppers)
        report = asyncio.run(load_demo(
            demo, profile_addresses=layout.profile_addresses(), gateway_address=layout.address("gateway"),
            segmentation_address=layout.address("segmentation"),
            recommendation_address=layout.address("recommendation")))
        print(f"demo store: {report}", file=sys.stderr)
        console_pid = next(c.process.pid for c in suite.children if c.name == "console" and c.process)
        base = f"http://{layout.address('console')}"
        with httpx2.Client(base_url=base, timeout=30) as client:
            token = _CSRF.search(client.get("/login").text).group(1)  # type: ignore[union-attr]
            client.post("/login", data={"operator": "bench", "password": PASSWORD, "csrf_token": token})
            ids = asyncio.run(demo_customers(layout.profile_addresses()[0], args.customers, args.heaviest))
            for user_id in ids[: min(5, len(ids))]:  # warm-up: channels, template cache
                warm = client.get("/customers", params={"q": user_id})
                assert warm.status_code == 200, (user_id, warm.status_code, warm.text[:2000])
            floor = []
            for _ in range(args.customers * args.rounds):
                started = time.perf_counter()
                client.get("/healthz")
                floor.append((time.perf_counter() - started) * 1000)
            pages, sizes, events, messages = [], [], [], []
            degraded: list[str] = []
            cpu_before = cpu_seconds(console_pid) or 0.0
            for _ in tqdm(range(args.rounds), desc="rounds", unit="round"):
                for user_id in ids:
                    started = time.perf_counter()
                    reply = client.get("/customers", params={"q": user_id})
                    pages.append((time.perf_counter() - started) * 1000)
                    assert reply.status_code == 200, (user_id, reply.status_code)
                    sizes.append(len(reply.content))
                    found = re.search(r"(\d+) stored events", reply.text)
                    events.append(int(found.group(1)) if found else 0)
                    sent = re.search(r"(\d+) journey messages", reply.text)
                    messages.append(int(sent.group(1)) if sent else 0)
                    if 'class="banner warn"' in reply.text:  # a part missed its deadline: count it, say which
                        degraded.append(re.sub(r"<[^>]+>", "", reply.text.split('class="banner warn"', 1)[1]
                                               .split("</div>", 1)[0]).strip(' >"')[:120])
            cpu_page_ms = ((cpu_seconds(console_pid) or 0.0) - cpu_before) * 1000 / len(pages)
        grpc_times = asyncio.run(get_profile_times(layout.address("gateway"), ids, args.rounds))
    print(f"\ncustomer page, {len(ids)} {'heaviest ' if args.heaviest else ''}demo customers x {args.rounds} rounds "
          f"({args.shoppers} shoppers, {args.products} products); page {statistics.median(sizes) / 1024:.0f} KiB "
          f"median, {statistics.median(events):.0f} stored events median (max {max(events)}), "
          f"{sum(m > 0 for m in messages) / len(messages):.0%} of pages with journey messages")
    print(line("GET /customers?q=<demo customer>", pages, f"console CPU {cpu_page_ms:.1f} ms/page"))
    print(line("GET /healthz (HTTP floor)", floor))
    print(line("gateway GetProfile (gRPC floor)", grpc_times))
    p50 = percentiles(pages)["p50"]
    print(f"page p50 / healthz p50 = {p50 / statistics.median(floor):.0f}x; "
          f"page p50 / GetProfile p50 = {p50 / statistics.median(grpc_times):.1f}x; "
          f"under 300 ms: {sum(t < 300 for t in pages)}/{len(pages)}; pages with a part missing: {len(degraded)}"
          + (f" (first: {degraded[0]})" if degraded else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--heaviest", action="store_true", help="the customers with the most stored events")
    parser.add_argument("--shoppers", type=int, default=5_000, help="demo store size (default: the demo preset)")
    parser.add_argument("--products", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vitrine-console-bench-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
