"""EstimateSize through the real profile service: two profile shards, events tracked over gRPC,
the segmentation service scanning both (ScanProfiles) and evaluating column-wise."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from scoring.rules import compile_rule
from scoring.units import DAY_MS as DAY
from services.segmentation.app import build_service
from services.segmentation.config import SegmentationConfig
from services.segmentation.fields import SCHEMA
from tests.segmentation.rules_support import message_matches
from tests.support import assert_status, channel_to, serving
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import profile_pb2, profile_pb2_grpc, segment_pb2, segment_pb2_grpc

profile_app = pytest.importorskip("services.profile.app", reason="the profile service is not in the tree yet")
profile_config = pytest.importorskip("services.profile.config")



@contextlib.asynccontextmanager
async def profile_shard(path: Path) -> AsyncIterator[str]:
    cfg = profile_config.ProfileConfig(port=0, data_dir=str(path), sync=False, map_size_mb=64,
                                       purge_interval_seconds=0)
    async with serving(profile_app.build_service(cfg), cfg) as running:
        yield running.address


def event(user: str, n: int, kind: int, now: int, **fields: object) -> c.Event:
    return c.Event(event_id=f"{user}-{n}", user_id=user, type=kind, timestamp_ms=now - 3 * DAY + n * 60_000,
                   **fields)  # type: ignore[arg-type]


def shopper_events(user: str, purchases: int, country: str, now: int) -> list[c.Event]:
    ctx = c.Context(country=country, device_type="mobile", traffic_source="email")
    events = [event(user, 0, c.PAGE_VIEW, now, context=ctx)]
    for i in range(purchases):
        events.append(event(user, i + 1, c.PURCHASE, now, product_id=f"p{i}", price=20.0, quantity=1,
                            order_id=f"{user}-o{i}", context=ctx))
    return events


async def track(address: str, events: list[c.Event]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        for e in events:
            await stub.Track(profile_pb2.TrackRequest(event=e), timeout=10)


async def scan_all(address: str) -> list[c.Profile]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        return [p async for p in stub.ScanProfiles(profile_pb2.ScanProfilesRequest(), timeout=10)]


async def test_estimate_size_scans_every_profile_shard(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    async with profile_shard(tmp_path / "a") as shard_a, profile_shard(tmp_path / "b") as shard_b:
        events_a = [e for i in range(5) for e in shopper_events(f"a{i}", i, "DE", now)]
        events_b = [e for i in range(3) for e in shopper_events(f"b{i}", 2 * i, "FR", now)]
        await track(shard_a, events_a)
        await track(shard_b, events_b)
        profiles = await scan_all(shard_a) + await scan_all(shard_b)
        assert len(profiles) == 8

        cfg = SegmentationConfig(port=0, data_dir=str(tmp_path / "seg"), profile_addresses=f"{shard_a},{shard_b}",
                                 scan_timeout_seconds=20)
        async with serving(build_service(cfg), cfg) as running, channel_to(running) as channel:
            stub = segment_pb2_grpc.SegmentServiceStub(channel)
            await stub.PutSegment(segment_pb2.PutSegmentRequest(segment=segment_pb2.Segment(
                segment_id="repeat_buyers", rule='purchase_count >= 2 and events("PURCHASE", days=7) >= 2')),
                timeout=5)

            async def estimate(**target: str) -> tuple[int, int]:
                reply = await stub.EstimateSize(segment_pb2.EstimateSizeRequest(now_ms=now, **target), timeout=30)
                return reply.matching, reply.total

            assert await estimate(segment_id="repeat_buyers") == (3 + 2, 8)   # a2 a3 a4, b1 b2
            assert await estimate(segment_id="geo:FR") == (3, 8)
            assert await estimate(rule='last_context.device_type == "mobile"') == (8, 8)
            assert await estimate(rule="total_spend >= 60") == (2 + 1, 8)     # a3 a4, b2

            # the vectorized count equals evaluating each scanned profile on its own
            for rule in ('purchase_count >= 1 and last_context.traffic_source == "email"',
                         "days_since(last_seen_ms) < 7 and visit_count >= 1", "vip", "new_visitor"):
                target = {"segment_id": rule} if " " not in rule else {"rule": rule}
                source = rule if " " in rule else next(b.rule for b in running.service.engine.builtin_rules
                                                       if b.segment_id == rule)
                compiled = compile_rule(source, SCHEMA)
                expected = sum(message_matches([compiled], p, c.Context(), now)[0] for p in profiles)
                assert await estimate(**target) == (expected, 8), rule

    # shards gone: no estimate rather than a wrong one
    async with serving(build_service(cfg), cfg) as running, channel_to(running) as channel:
        stub = segment_pb2_grpc.SegmentServiceStub(channel)
        await assert_status(stub.EstimateSize(segment_pb2.EstimateSizeRequest(segment_id="vip"), timeout=10),
                            grpc.StatusCode.UNAVAILABLE)


async def test_evaluate_a_profile_read_from_the_profile_service(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    async with profile_shard(tmp_path / "p") as shard:
        await track(shard, shopper_events("buyer", 2, "FR", now))
        await track(shard, [c.Event(event_id="later-visit", user_id="buyer", type=c.PAGE_VIEW,
                                    timestamp_ms=now - DAY)])  # a day later: a second visit
        async with grpc.aio.insecure_channel(shard) as channel:
            profile = await profile_pb2_grpc.ProfileServiceStub(channel).GetProfile(
                profile_pb2.GetProfileRequest(user_id="buyer"), timeout=5)
        assert (profile.purchase_count, profile.visit_count) == (2, 2)
        cfg = SegmentationConfig(port=0, data_dir=str(tmp_path / "seg"), profile_addresses=shard)
        async with serving(build_service(cfg), cfg) as running, channel_to(running) as channel:
            stub = segment_pb2_grpc.SegmentServiceStub(channel)
            await stub.PutSegment(segment_pb2.PutSegmentRequest(segment=segment_pb2.Segment(
                segment_id="fr_buyers", priority=200,
                rule='last_context.country == "FR" and events("PURCHASE", days=7) == 2 and total_spend >= 40')),
                timeout=5)
            answer = await stub.Evaluate(segment_pb2.EvaluateRequest(
                profile=profile, context=c.Context(device_type="desktop"), now_ms=now), timeout=5)
            assert list(answer.segment_ids) == ["fr_buyers", "returning_customer", "guest", "source:email",
                                                "geo:FR", "device:desktop"]
