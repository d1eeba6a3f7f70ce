"""The gateway's own cost: the same open-loop run against the gateway in front of instant
in-memory backends (vitrine/loadtest/fakes.py, also used by the gateway tests), next to the
echo ceiling. Separates what the gateway adds from what the real backends cost.

    python -m benchmarks.loadtest.gateway_only --steps 250,500,1000,1500 --out /tmp/gw-only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vitrine.health import wait_serving
from vitrine.loadtest import report
from vitrine.loadtest.cpu import CpuSampler, annotate
from vitrine.loadtest.run import child_env, echo_server, run_generator
from vitrine.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0

USERS = 10_000


async def _backends(ports: dict[str, int], batch: bool = True) -> None:
    from services.common.config import ServerConfig
    from services.common.server import build_server
    from vitrine.loadtest.fakes import FakeProfile, FakeRecommendation, FakeSegmentation
    from vitrine.v1 import common_pb2

    profile = FakeProfile()
    for i in range(USERS):
        user = f"u{i}"
        profile.profiles[user] = common_pb2.Profile(
            user_id=user, event_count=5, recently_viewed=["p000001", "p000002"], category_affinity={"shoes": 0.5})
    fakes = {"profile": profile, "segmentation": FakeSegmentation(), "recommendation": FakeRecommendation()}
    fakes["recommendation"].batch_implemented = batch  # type: ignore[attr-defined]
    servers = [await build_server(ServerConfig(port=ports[name]), fake) for name, fake in fakes.items()]
    while servers:  # (holding `servers`: a grpc.aio server that is garbage-collected stops)
        # Keep the recorders from growing without bound.
        await asyncio.sleep(1)
        fakes["recommendation"].requests.clear()  # type: ignore[attr-defined]
        fakes["recommendation"].observed.clear()  # type: ignore[attr-defined]
        fakes["segmentation"].seen.clear()  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="250,500,1000,1500")
    parser.add_argument("--echo-steps", default="500,1000,1500")
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/vitrine-gateway-only"))
    parser.add_argument("--no-batch", action="store_true",
                        help="the fake recommendation service lacks RecommendBatch (one Recommend per placement)")
    parser.add_argument("--serve-backends", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_backends:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        spec = json.loads(args.serve_backends)
        asyncio.run(_backends(spec["ports"], spec["batch"]))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    names = ("profile", "segmentation", "recommendation", "gateway")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    spec = json.dumps({"ports": ports, "batch": not args.no_batch})
    # This script is run from a checkout (benchmarks/ is not installed): the child imports it from ROOT.
    env = {**child_env(), "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    backends = subprocess.Popen([sys.executable, "-m", "benchmarks.loadtest.gateway_only", "--serve-backends", spec],
                                cwd=ROOT, env=env)
    gateway = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for name in ("profile", "segmentation", "recommendation"):
            wait_serving(f"127.0.0.1:{ports[name]}", deadline, backends)
        gateway = subprocess.Popen([
            sys.executable, "-m", "services.gateway", "--port", str(ports["gateway"]), "--log-level", "ERROR",
            "--profile-addresses", f"127.0.0.1:{ports['profile']}",
            "--segmentation-address", f"127.0.0.1:{ports['segmentation']}",
            "--recommendation-address", f"127.0.0.1:{ports['recommendation']}"], env=child_env())
        wait_serving(f"127.0.0.1:{ports['gateway']}", time.monotonic() + START_TIMEOUT_S, gateway)
        users = args.out / "users.txt"
        users.write_text("\n".join(f"u{i}" for i in range(USERS)))
        rates = [float(x) for x in args.steps.split(",")]
        echo_rates = [float(x) for x in args.echo_steps.split(",") if x]
        echo: dict = {"mode": "echo", "step_seconds": args.step_seconds, "steps": []}
        if echo_rates:
            with CpuSampler({}) as sampler, echo_server(sampler) as address:
                echo = run_generator(address, "echo", echo_rates, args.step_seconds, sampler=sampler)
            annotate(echo, sampler)
        with CpuSampler({"gateway": gateway.pid, "fake backends": backends.pid}) as sampler:
            vitrine = run_generator(f"127.0.0.1:{ports['gateway']}", "vitrine", rates, args.step_seconds,
                                    ["--users", str(users)], sampler=sampler)
        annotate(vitrine, sampler)
    finally:
        for process in (gateway, backends):
            if process is not None:
                process.terminate()
                process.wait(10)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "store": "none: instant in-memory backends (vitrine/loadtest/fakes.py), 10,000 known shoppers",
            "suite": "gateway process + one process serving the three fake backends"
                     + (" (no RecommendBatch: one Recommend per placement)" if args.no_batch else "")}
    (args.out / "results.md").write_text(report.markdown(vitrine, echo, meta))
    (args.out / "results.json").write_text(json.dumps({"vitrine": vitrine, "echo": echo}, indent=1))
    print(report.table(vitrine))
    print(report.cpu_table(vitrine))


if __name__ == "__main__":
    main()
