"""Does the Numba wire reader pay end to end? Personalize latency with and without it, in one run.

Two segmentation processes over the same definitions, one reading rule features with the wire
reader (the default) and one through protobuf's parser (`VITRINE_SEGMENTATION_WIRE_READER=0`),
each behind its own gateway; profile and recommendation are shared. Every round sends the same
shopper's Personalize to both gateways in random order, one call at a time (closed loop, so
neither arm waits behind the other), and the shopper's Evaluate straight to both segmentation
services. Latencies are compared pairwise: the share of rounds in which the wire arm was faster
and the median of the per-round differences are robust to the noise of a shared machine.

    python -m benchmarks.segmentation.wire_personalize --rounds 2000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from tqdm import tqdm

from vitrine.demo.config import DemoConfig
from vitrine.demo.loader import load_demo_sync
from vitrine.demo.store import demo_offers, demo_segments
from vitrine.health import wait_serving
from vitrine.ports import free_ports
from vitrine.v1 import (
    gateway_pb2,
    gateway_pb2_grpc,
    profile_pb2,
    profile_pb2_grpc,
    segment_pb2,
    segment_pb2_grpc,
)

START_TIMEOUT_S = 180.0
CALL_TIMEOUT_S = 5.0
DEADLINE_MS = 1000  # generous: the comparison is of latency, not of fallbacks
WARM_UP_ROUNDS = 200
SHOPPERS = 500  # distinct shoppers the rounds draw from
PAGES = ("home", "product", "cart")
ARMS = ("wire", "protobuf")


@contextlib.contextmanager
def _processes(data: Path, ports: dict[str, int]) -> Iterator[None]:
    def address(name: str) -> str:
        return f"127.0.0.1:{ports[name]}"

    base_env = {**os.environ, "PYTHONUNBUFFERED": "1", "VITRINE_LOG_LEVEL": "WARNING"}
    specs: list[tuple[str, list[str], dict[str, str]]] = [
        ("profile", ["services.profile", "--data-dir", str(data / "profile")], {}),
        ("recommendation", ["services.recommendation", "--data-dir", str(data / "shared"),
                            "--profile-addresses", address("profile")], {}),
    ]
    for arm in ARMS:
        specs.append((f"segmentation-{arm}", [
            "services.segmentation", "--data-dir", str(data / arm), "--profile-addresses", address("profile")],
            {"VITRINE_SEGMENTATION_WIRE_READER": "1" if arm == "wire" else "0"}))
        specs.append((f"gateway-{arm}", [
            "services.gateway", "--profile-addresses", address("profile"),
            "--segmentation-address", address(f"segmentation-{arm}"),
            "--recommendation-address", address("recommendation")], {}))
    children: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for name, argv, env in specs:
            log = (data / f"{name}.log").open("wb")
            process = subprocess.Popen([sys.executable, "-m", *argv, "--host", "127.0.0.1",
                                        "--port", str(ports[name]), "--metrics-port", "-1"],
                                       env={**base_env, **env}, stdout=log, stderr=subprocess.STDOUT)
            children.append(process)
            wait_serving(address(name), deadline, process)
        yield
    finally:
        for process in reversed(children):
            process.terminate()
        for process in children:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def _summary(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for arm, values in samples.items():
        ordered = sorted(values)
        out[arm] = {"p50": statistics.median(ordered), "p90": ordered[int(0.9 * (len(ordered) - 1))],
                    "p99": ordered[int(0.99 * (len(ordered) - 1))], "mean": statistics.fmean(ordered)}
    wire, proto = samples["wire"], samples["protobuf"]
    out["paired"] = {"wire_faster_share": sum(w < p for w, p in zip(wire, proto, strict=True)) / len(wire),
                     "median_difference_ms": statistics.median(p - w for w, p in zip(wire, proto, strict=True))}
    return out


def run(rounds: int, products: int, shoppers: int, seed: int) -> dict[str, object]:
    names = ["profile", "recommendation", *(f"{kind}-{arm}" for arm in ARMS for kind in ("segmentation", "gateway"))]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="vitrine-wire-ab-") as tmp, _processes(Path(tmp), ports):
        def address(name: str) -> str:
            return f"127.0.0.1:{ports[name]}"

        config = DemoConfig(n_products=products, n_shoppers=shoppers, seed=seed)
        report = load_demo_sync(config, profile_addresses=[address("profile")],
                                segmentation_address=address("segmentation-wire"),
                                recommendation_address=address("recommendation"), progress=False)
        assert not report.errors, report.errors
        with contextlib.ExitStack() as stack:
            channel = {name: stack.enter_context(grpc.insecure_channel(address(name))) for name in names}
            # The protobuf arm gets the same definitions as the wire arm.
            proto = segment_pb2_grpc.SegmentServiceStub(channel["segmentation-protobuf"])
            for segment in demo_segments():
                proto.PutSegment(segment_pb2.PutSegmentRequest(segment=segment), timeout=CALL_TIMEOUT_S)
            for offer in demo_offers(config.resolved().end_ms):
                proto.PutOffer(segment_pb2.PutOfferRequest(offer=offer), timeout=CALL_TIMEOUT_S)
            profiles = profile_pb2_grpc.ProfileServiceStub(channel["profile"])
            users = [p.user_id for p in profiles.ScanProfiles(profile_pb2.ScanProfilesRequest(limit=SHOPPERS),
                                                              timeout=60)]
            gateways = {arm: gateway_pb2_grpc.PersonalizationServiceStub(channel[f"gateway-{arm}"]) for arm in ARMS}
            segments = {arm: segment_pb2_grpc.SegmentServiceStub(channel[f"segmentation-{arm}"]) for arm in ARMS}
            personalize: dict[str, list[float]] = {arm: [] for arm in ARMS}
            evaluate: dict[str, list[float]] = {arm: [] for arm in ARMS}
            fallbacks = dict.fromkeys(ARMS, 0)
            for number in tqdm(range(WARM_UP_ROUNDS + rounds), desc="rounds", unit="round", file=sys.stderr):
                user = rng.choice(users)
                request = gateway_pb2.PersonalizeRequest(user_id=user, page_type=rng.choice(PAGES),
                                                         product_id="p000001", deadline_ms=DEADLINE_MS)
                profile = profiles.GetProfile(profile_pb2.GetProfileRequest(user_id=user), timeout=CALL_TIMEOUT_S)
                evaluation = segment_pb2.EvaluateRequest(profile=profile, context=profile.last_context)
                for arm in rng.sample(ARMS, len(ARMS)):
                    started = time.perf_counter()
                    reply = gateways[arm].Personalize(request, timeout=CALL_TIMEOUT_S)
                    took = time.perf_counter() - started
                    started = time.perf_counter()
                    segments[arm].Evaluate(evaluation, timeout=CALL_TIMEOUT_S)
                    evaluated = time.perf_counter() - started
                    if number >= WARM_UP_ROUNDS:
                        personalize[arm].append(took * 1000.0)
                        evaluate[arm].append(evaluated * 1000.0)
                        fallbacks[arm] += "segmentation" in reply.fallback_reason
    return {"rounds": rounds, "store": f"demo store: {products:,} products, {shoppers:,} shoppers (seed {seed})",
            "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
            "personalize_ms": _summary(personalize), "evaluate_ms": _summary(evaluate),
            "segmentation_fallbacks": fallbacks}


def markdown(result: dict[str, object]) -> str:
    lines = [f"{result['store']}; {result['rounds']:,} paired rounds; {result['machine']}", "",
             "| call | arm | p50 ms | p90 ms | p99 ms | mean ms |", "|---|---|---:|---:|---:|---:|"]
    paired = []
    for call in ("personalize_ms", "evaluate_ms"):
        summary = result[call]
        assert isinstance(summary, dict)
        for arm in ARMS:
            s = summary[arm]
            lines.append(f"| {call.removesuffix('_ms')} | {arm} | {s['p50']:.3f} | {s['p90']:.3f} | "
                         f"{s['p99']:.3f} | {s['mean']:.3f} |")
        p = summary["paired"]
        paired.append(f"{call.removesuffix('_ms')}: wire faster in {p['wire_faster_share']:.0%} of rounds, "
                      f"median per-round saving {p['median_difference_ms']:.3f} ms")
    return "\n".join([*lines, "", *paired, f"segmentation fallbacks: {result['segmentation_fallbacks']}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--shoppers", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(args.rounds, args.products, args.shoppers, args.seed)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
