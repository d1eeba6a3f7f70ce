"""A synthetic store through the real services: does GetExperimentResults find what is there?

    .venv/bin/python -m benchmarks.segmentation.experiments_simulate --runs 6 --shoppers 2000

A profile server and a segmentation server run in this process on loopback ports (port 0, data
in a temporary directory). Each run defines a fresh two-variant experiment; every shopper is
assigned by `Evaluate` (as the gateway does it), gets one EXPOSURE event with its assignment,
and converts with probability `base_rate` (times 1 + lift under variant B), buying a log-normal
basket. Events go in through `TrackBatch`; the segmentation service learns everything from
`FollowEvents`. The script then compares the service's answer with the ground truth it knows
(exposed shoppers, converters and revenue per variant) and prints one table row per run.

Many runs for the A/A false-positive rate and the A/B power use the same assignment and
statistics code in process (`vitrine experiments simulate`): through the services a run of
2,000 shoppers takes seconds, so hundreds of runs would take too long for this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from services.common.server import build_server
from services.profile.app import build_service as build_profile
from services.profile.config import ProfileConfig
from services.segmentation.app import build_service as build_segmentation
from services.segmentation.config import SegmentationConfig
from services.segmentation.feed import ResultsFeed
from vitrine.commands._table import table
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import profile_pb2, profile_pb2_grpc, segment_pb2, segment_pb2_grpc
from vitrine.v1 import recommend_pb2 as r

BATCH = 500
WAIT_S = 120.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def one_run(run: int, lift: float, shoppers: int, base_rate: float, rng: random.Random,
                  profiles: profile_pb2_grpc.ProfileServiceStub, segments: segment_pb2_grpc.SegmentServiceStub,
                  feed: ResultsFeed, bar: tqdm) -> list[str]:
    experiment_id = f"sim-{run}"
    await segments.PutExperiment(segment_pb2.PutExperimentRequest(experiment=segment_pb2.Experiment(
        experiment_id=experiment_id, slot_id=f"slot-{run}",
        variants=[segment_pb2.Variant(variant_id="a", weight=1, strategy=r.TRENDING),
                  segment_pb2.Variant(variant_id="b", weight=1, strategy=r.FOR_YOU)])), timeout=10)
    truth = {"a": [0, 0, 0.0], "b": [0, 0, 0.0]}   # users, converters, revenue
    events: list[c.Event] = []
    sigma = 0.8
    mu = math.log(60.0) - sigma * sigma / 2

    async def flush() -> None:
        if events:
            summary = await profiles.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=30)
            assert summary.rejected == 0, list(summary.errors)[:3]
            events.clear()

    for i in range(shoppers):
        user = f"run{run}-shopper{i}"
        reply = await segments.Evaluate(segment_pb2.EvaluateRequest(profile=c.Profile(user_id=user)), timeout=10)
        (a,) = [x for x in reply.assignments if x.experiment_id == experiment_id]
        t = now_ms()
        events.append(c.Event(event_id=f"{user}-x", user_id=user, type=c.EXPOSURE, timestamp_ms=t,
                              exposures=[c.ExperimentExposure(experiment_id=experiment_id, variant_id=a.variant_id,
                                                              slot_id=a.slot_id)]))
        truth[a.variant_id][0] += 1
        rate = base_rate * (1 + lift) if a.variant_id == "b" else base_rate
        if rng.random() < rate:
            price = round(rng.lognormvariate(mu, sigma), 2)
            events.append(c.Event(event_id=f"{user}-p", user_id=user, type=c.PURCHASE, timestamp_ms=t + 1,
                                  product_id="p1", price=price, quantity=1, order_id=f"{user}-o"))
            truth[a.variant_id][1] += 1
            truth[a.variant_id][2] += price
        if len(events) >= BATCH:
            await flush()
        bar.update(1)
    await flush()
    sentinel = await profiles.Track(profile_pb2.TrackRequest(event=c.Event(
        event_id=f"sentinel-{run}", user_id="sentinel", type=c.PAGE_VIEW, timestamp_ms=now_ms())), timeout=10)
    await feed.wait_for([sentinel.seq + 1], WAIT_S)
    res = await segments.GetExperimentResults(segment_pb2.GetExperimentResultsRequest(experiment_id=experiment_id),
                                              timeout=10)
    a_res, b_res = res.variants
    exact = all((v.users, v.converters) == (truth[v.variant_id][0], truth[v.variant_id][1])
                and abs(v.revenue - truth[v.variant_id][2]) < 1e-6 * max(1.0, v.revenue) for v in res.variants)
    significant = not (b_res.conversion_lift_ci_low <= 0.0 <= b_res.conversion_lift_ci_high)
    return [experiment_id, f"{lift:+.0%}", f"{a_res.users:,} / {b_res.users:,}",
            f"{a_res.conversion_rate:.2%} / {b_res.conversion_rate:.2%}",
            f"{b_res.conversion_lift:+.1%} [{b_res.conversion_lift_ci_low:+.1%}, {b_res.conversion_lift_ci_high:+.1%}]",
            "yes" if significant else "no",
            f"{b_res.revenue_lift:+.1%} [{b_res.revenue_lift_ci_low:+.1%}, {b_res.revenue_lift_ci_high:+.1%}]",
            f"{res.srm_p_value:.3f}", "yes" if exact else "NO"]


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pcfg = ProfileConfig(port=0, data_dir=str(Path(tmp) / "profile"), sync=False, map_size_mb=512,
                             purge_interval_seconds=0)
        profile = await build_server(pcfg, build_profile(pcfg))
        scfg = SegmentationConfig(port=0, data_dir=str(Path(tmp) / "seg"), profile_addresses=profile.address)
        service = build_segmentation(scfg)
        seg = await build_server(scfg, service)
        try:
            import grpc

            async with grpc.aio.insecure_channel(profile.address) as pch, \
                    grpc.aio.insecure_channel(seg.address) as sch:
                profiles = profile_pb2_grpc.ProfileServiceStub(pch)
                segments = segment_pb2_grpc.SegmentServiceStub(sch)
                rng = random.Random(args.seed)
                lifts = [float(x) for x in args.lifts.split(",")]
                rows = []
                assert service.feed is not None
                with tqdm(total=args.runs * args.shoppers, unit=" shoppers", desc="store") as bar:
                    for run in range(args.runs):
                        lift = lifts[run % len(lifts)]
                        rows.append(await one_run(run, lift, args.shoppers, args.base_rate, rng, profiles, segments,
                                                  service.feed, bar))
                        await segments.DeleteExperiment(segment_pb2.DeleteExperimentRequest(
                            experiment_id=f"sim-{run}"), timeout=10)
        finally:
            await seg.stop(1)
            await profile.stop(1)
    print(table(["experiment", "true lift", "users a / b", "conversion a / b", "conversion lift (95% CI)",
                 "significant", "revenue lift (95% CI)", "SRM p", "service = truth"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--shoppers", type=int, default=2000)
    parser.add_argument("--base-rate", type=float, default=0.05)
    parser.add_argument("--lifts", default="0,0.5", help="true lifts of B, used in turn (0 = A/A)")
    parser.add_argument("--seed", type=int, default=1)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
