"""The whole suite end to end: real service processes on loopback, driven through the gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import known_shopper
from vitrine.health import wait_serving
from vitrine.ports import free_ports
from vitrine.supervisor import DEFAULT_PORTS, SERVICES, Suite, SuiteLayout, probe
from vitrine.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, profile_pb2, recommend_pb2

pytestmark = pytest.mark.slow

SERVICE_NAMES = {
    "gateway": "vitrine.v1.PersonalizationService",
    "profile": "vitrine.v1.ProfileService",
    "segmentation": "vitrine.v1.SegmentService",
    "recommendation": "vitrine.v1.RecommendService",
    "journeys": "vitrine.v1.JourneyService",
}


def layout_for(tmp_path: Path, shards: int = 1) -> SuiteLayout:
    ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)), strict=True))
    # Extra shards sit at profile + 10·i; make sure those are free-ish by picking a high base.
    return SuiteLayout(data_dir=tmp_path / "data", ports=ports, profile_shards=shards)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    from vitrine.demo.config import DemoConfig
    from vitrine.demo.loader import load_demo

    layout = layout_for(tmp_path_factory.mktemp("suite"))
    running = Suite(layout)
    running.start()
    try:
        report = asyncio.run(load_demo(
            DemoConfig(n_products=400, n_shoppers=150, seed=7),
            profile_addresses=layout.profile_addresses(),
            gateway_address=layout.address("gateway"),
            segmentation_address=layout.address("segmentation"),
            recommendation_address=layout.address("recommendation"),
        ))
        # The store every test below reads must have loaded completely.
        assert not report.errors, report.errors
        assert report.events_accepted == report.events > 0 and report.events_rejected == 0
        assert report.products_upserted == report.products and report.model_version
        yield running
    finally:
        running.stop()


PERSONALIZED_WITHIN_S = 30.0


def test_every_service_serves_health_and_reflection(suite: Suite) -> None:
    for child in suite.children:
        name = child.name.split("-")[0]
        if child.health == "http":  # the console: an HTTP service with a /healthz page
            assert probe(child), f"{child.name} does not answer {child.health_path}"
            continue
        with grpc.insecure_channel(child.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAMES[name]), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                timeout=5)
            names = {s.name for a in answers for s in a.list_services_response.service}
            assert SERVICE_NAMES[name] in names


def test_personalize_known_shopper_is_personalized(suite: Suite) -> None:
    user = known_shopper(suite.layout.profile_addresses()[0])
    with grpc.insecure_channel(suite.layout.address("gateway")) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        # One answer may fall back when a backend misses its budget on a loaded machine (that is the
        # default experience working); the suite must give a fully personalized one within the bound.
        deadline = time.monotonic() + PERSONALIZED_WITHIN_S
        while True:
            reply = stub.Personalize(gateway_pb2.PersonalizeRequest(
                user_id=user, page_type="home", deadline_ms=2000,
                context=common_pb2.Context(device_type="mobile", country="BR", traffic_source="email"),
            ), timeout=5)
            if not reply.fallback_reason or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert reply.personalized and not reply.fallback_reason, reply.fallback_reason
    assert reply.placements and all(p.items for p in reply.placements)
    assert "device:mobile" in reply.segment_ids and "geo:BR" in reply.segment_ids
    for placement in reply.placements:
        assert all(item.product_id for item in placement.items)


def test_unknown_shopper_gets_default_experience(suite: Suite) -> None:
    with grpc.insecure_channel(suite.layout.address("gateway")) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        reply = stub.Personalize(gateway_pb2.PersonalizeRequest(user_id="nobody-ever", page_type="home"), timeout=5)
    assert not reply.personalized
    assert "unknown_user" in reply.fallback_reason
    assert any(p.items for p in reply.placements)


def test_track_through_gateway_updates_profile_and_never_recommends_out_of_stock(suite: Suite) -> None:
    from vitrine.v1 import recommend_pb2_grpc

    now = int(time.time() * 1000)
    with grpc.insecure_channel(suite.layout.address("gateway")) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        event = common_pb2.Event(event_id="e2e-1", user_id="e2e-shopper", session_id="s1",
                                 type=common_pb2.PRODUCT_VIEW, timestamp_ms=now, product_id="p000001")
        assert stub.Track(profile_pb2.TrackRequest(event=event), timeout=5).applied
        assert not stub.Track(profile_pb2.TrackRequest(event=event), timeout=5).applied
        profile = stub.GetProfile(profile_pb2.GetProfileRequest(user_id="e2e-shopper"), timeout=5)
        assert profile.recently_viewed[0] == "p000001"

        with grpc.insecure_channel(suite.layout.address("recommendation")) as rec_channel:
            rec = recommend_pb2_grpc.RecommendServiceStub(rec_channel)
            trending = rec.Recommend(recommend_pb2.RecommendRequest(strategy=recommend_pb2.TRENDING, k=5), timeout=5)
            sold_out = trending.items[0].product_id
            rec.UpdateInventory(iter([recommend_pb2.StockUpdate(product_id=sold_out, stock=0)]), timeout=5)
        reply = stub.Personalize(gateway_pb2.PersonalizeRequest(user_id="e2e-shopper", page_type="home",
                                                                deadline_ms=2000), timeout=5)
        shown = {item.product_id for p in reply.placements for item in p.items}
        assert sold_out not in shown


def test_vitrine_up_starts_everything_and_stops_on_sigterm(tmp_path: Path) -> None:
    ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)), strict=True))
    flags = [f"--{name}-port={port}" for name, port in ports.items()]
    grpc_services = {spec.name for spec in SERVICES if spec.health == "grpc"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vitrine", "up", "--no-demo", "--data-dir", str(tmp_path / "d"), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        for name, port in ports.items():
            if name in grpc_services:
                wait_serving(f"127.0.0.1:{port}", deadline, process)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    text = output.decode()
    assert process.returncode == 0, text
    assert "SERVING" in text and "stopped." in text
