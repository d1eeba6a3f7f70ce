"""From Personalize to GetExperimentResults through the REAL suite (two profile shards, the real
gateway writing EXPOSURE events, the segmentation service following both shards' logs): the
results count exactly the shoppers the gateway served under each variant, and their purchases."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from services.segmentation.app import SegmentationService
from tests.gateway.real import start_real_suite
from vitrine.v1 import common_pb2, gateway_pb2, profile_pb2, recommend_pb2, segment_pb2, segment_pb2_grpc

WAIT_S = 30.0


async def test_gateway_exposures_and_purchases_reach_the_results(tmp_path: Path) -> None:
    real = await start_real_suite(tmp_path, shards=2, load=False)
    channel = grpc.aio.insecure_channel(real.segmentation.address)
    try:
        segments = segment_pb2_grpc.SegmentServiceStub(channel)
        await segments.PutExperiment(segment_pb2.PutExperimentRequest(experiment=segment_pb2.Experiment(
            experiment_id="home-test", slot_id="for_you",
            variants=[segment_pb2.Variant(variant_id="control", weight=1, strategy=recommend_pb2.TRENDING),
                      segment_pb2.Variant(variant_id="short", weight=1, strategy=recommend_pb2.TRENDING, k=3)])),
            timeout=5)
        assert await real.service.experiments.refresh()  # type: ignore[union-attr]
        served: dict[str, str] = {}
        for i in range(30):
            user = f"visitor-{i}"
            reply = await real.stub.Personalize(gateway_pb2.PersonalizeRequest(user_id=user, session_id="s",
                                                                               page_type="home"), timeout=5)
            mine = [a for a in reply.assignments if a.experiment_id == "home-test"]
            if mine:  # none when segmentation missed the request's budget (a loaded machine): not exposed
                served[user] = mine[0].variant_id
        assert set(served.values()) == {"control", "short"}
        buyers = [u for i, u in enumerate(served) if i % 3 == 0]
        now = int(time.time() * 1000)
        for n, user in enumerate(buyers):
            await real.stub.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
                event_id=f"buy-{n}", user_id=user, type=common_pb2.PURCHASE, timestamp_ms=now + 1000,
                product_id="p1", price=12.5, quantity=2, order_id=f"o{n}")), timeout=5)

        expected = {v: (sum(x == v for x in served.values()), sum(served[u] == v for u in buyers))
                    for v in ("control", "short")}
        service = real.segmentation.service
        assert isinstance(service, SegmentationService) and service.feed is not None
        followers = service.feed.followers
        assert len(followers) == 2  # one per shard, each with its own cursor

        async def counted() -> dict[str, tuple[int, int]]:
            res = await segments.GetExperimentResults(
                segment_pb2.GetExperimentResultsRequest(experiment_id="home-test"), timeout=5)
            return {v.variant_id: (v.users, v.converters) for v in res.variants}

        async with asyncio.timeout(WAIT_S):  # until both logs are folded (woken by each applied batch)
            while True:
                # The cursors are read before the results: a batch applied while GetExperimentResults
                # is in flight moves a cursor past its mark and wakes the wait below at once, instead
                # of the wait looking for an item after the last one (which never comes).
                marks = [f.cursor for f in followers]
                if await counted() == expected:
                    break
                waits = [asyncio.ensure_future(f.wait_for_cursor(mark + 1))
                         for f, mark in zip(followers, marks, strict=True)]
                _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for w in pending:
                    w.cancel()
        res = await segments.GetExperimentResults(segment_pb2.GetExperimentResultsRequest(experiment_id="home-test"),
                                                  timeout=5)
        for v in res.variants:
            assert v.revenue == 25.0 * expected[v.variant_id][1]
        assert res.mixed_users == 0
    finally:
        await channel.close()
        await real.close()
