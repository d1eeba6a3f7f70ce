"""`vitrine experiments list | results ID | simulate`: experiments of the segmentation service."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math

import grpc

from services.common.channel import open_channel
from vitrine.commands._service_flags import add_service_flags
from vitrine.commands._table import table
from vitrine.v1 import recommend_pb2, segment_pb2, segment_pb2_grpc

NAME = "experiments"
HELP = ("list experiments, print one's results (users, conversion, revenue, lifts with 95% CIs, SRM), "
        "or simulate A/A and A/B tests")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_service_flags(parser, "segmentation service", "VITRINE_SEGMENTATION_ADDRESS", "127.0.0.1:50053")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="every experiment with its slot, window and variants")
    listing.add_argument("--active", action="store_true", help="only the running ones")
    results = sub.add_parser("results", help="one experiment's results per variant")
    results.add_argument("experiment_id")
    sim = sub.add_parser("simulate", help="A/A false-positive rate and A/B power over many synthetic runs "
                                          "(assignment and statistics as the service computes them)")
    sim.add_argument("--runs", type=int, default=500, help="runs per scenario (default 500)")
    sim.add_argument("--users", type=int, default=10_000, help="shoppers per run (default 10,000)")
    sim.add_argument("--base-rate", type=float, default=0.05, help="control conversion (default 0.05)")
    sim.add_argument("--lifts", default="0,0.1,0.2,0.3", help="true lifts of B, comma-separated (0 = A/A)")
    sim.add_argument("--seed", type=int, default=0)


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2%}"


def _money(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.2f}"


def _ci(lo: float, hi: float, fmt: str = "pct") -> str:
    f = _pct if fmt == "pct" else _money
    return "-" if math.isnan(lo) or math.isnan(hi) else f"[{f(lo)}, {f(hi)}]"


def list_table(experiments: list[segment_pb2.Experiment]) -> str:
    rows = []
    for e in experiments:
        variants = ", ".join(f"{v.variant_id}:{v.weight} {recommend_pb2.Strategy.Name(v.strategy)}"
                             f"{f' k={v.k}' if v.k else ''}" for v in e.variants)
        rows.append([e.experiment_id, e.slot_id, _when(e.starts_ms), _when(e.ends_ms),
                     ", ".join(e.segment_ids) or "everyone", variants])
    return table(["experiment", "slot", "starts", "ends", "who", "variants (id:weight strategy)"], rows)


def results_table(results: segment_pb2.ExperimentResults) -> str:
    rows = []
    for i, v in enumerate(results.variants):
        control = i == 0
        conv_lift = f"{_pct(v.conversion_lift)} {_ci(v.conversion_lift_ci_low, v.conversion_lift_ci_high)}"
        rev_lift = f"{_pct(v.revenue_lift)} {_ci(v.revenue_lift_ci_low, v.revenue_lift_ci_high)}"
        rows.append([v.variant_id + (" (control)" if control else ""), f"{v.users:,}", f"{v.converters:,}",
                     _pct(v.conversion_rate), _ci(v.conversion_ci_low, v.conversion_ci_high),
                     "-" if control else conv_lift, _money(v.revenue_per_user),
                     _ci(v.revenue_ci_low, v.revenue_ci_high, "money"), "-" if control else rev_lift,
                     f"{v.clicks:,}", f"{v.add_to_carts:,}"])
    text = table(["variant", "users", "converters", "conversion", "95% CI", "lift (95% CI)", "revenue/user",
                  "95% CI", "revenue lift (95% CI)", "clicks", "add-to-carts"], rows)
    srm = "SAMPLE RATIO MISMATCH: the split is broken; do not trust these numbers" if results.srm_detected \
        else "no sample ratio mismatch"
    return (f"{results.experiment_id}: {len(results.variants)} variants, {results.events_seen:,} feed items "
            f"seen, {results.mixed_users:,} shoppers seen in two variants\n{text}\n"
            f"SRM chi-square p = {results.srm_p_value:.4g}: {srm}")


async def _call(args: argparse.Namespace) -> str:
    async with open_channel(args.address, auth_token=args.auth_token) as channel:
        stub = segment_pb2_grpc.SegmentServiceStub(channel)
        if args.action == "list":
            reply = await stub.ListExperiments(segment_pb2.ListExperimentsRequest(active_only=args.active),
                                               timeout=args.timeout)
            return list_table(list(reply.experiments))
        results = await stub.GetExperimentResults(
            segment_pb2.GetExperimentResultsRequest(experiment_id=args.experiment_id), timeout=args.timeout)
        return results_table(results)


def _simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from scoring.stats.simulate import HEADER, Scenario, simulate

    lifts = [float(x) for x in args.lifts.split(",") if x.strip()]
    scenarios = [Scenario("A/A" if not lift else f"A/B {lift:+.0%}", users=args.users, base_rate=args.base_rate,
                          lift=lift, runs=args.runs) for lift in lifts]
    rows = []
    with tqdm(total=args.runs * len(scenarios), unit="run", desc="simulating") as bar:
        for i, scenario in enumerate(scenarios):
            rows.append(simulate(scenario, seed=args.seed + i, progress=bar.update).row())
    print(table(HEADER, rows))
    print("significant = the 95% interval of the relative lift excludes 0 (for A/A: the false-positive rate, "
          "5% expected); same test, binomial draws = that test's rate on 20,000 plain binomial experiments; "
          "z test = the textbook power of the difference test")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "simulate":
        return _simulate(args)
    try:
        print(asyncio.run(_call(args)))
    except grpc.aio.AioRpcError as err:
        print(f"{err.code().name}: {err.details()}")
        return 1
    return 0
