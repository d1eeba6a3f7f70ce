"""SegmentService through a real in-process server and channel."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.segmentation.app import build_service
from services.segmentation.config import DEFAULT_PORT, SegmentationConfig
from tests.support import assert_status, channel_to, serving
from vitrine.ports import free_port
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import segment_pb2 as s
from vitrine.v1 import segment_pb2_grpc

NOW = 1_763_900_000_000


def config(tmp_path: Path, **overrides: object) -> SegmentationConfig:
    values = {"port": 0, "data_dir": str(tmp_path), "profile_addresses": f"127.0.0.1:{free_port()}",
              "scan_timeout_seconds": 5.0, **overrides}
    return SegmentationConfig(**values)  # type: ignore[arg-type]


async def test_crud_evaluate_and_errors_over_grpc(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    async with serving(build_service(cfg), cfg) as running, channel_to(running) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="vitrine.v1.SegmentService"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = segment_pb2_grpc.SegmentServiceStub(channel)

        err = await assert_status(stub.PutSegment(s.PutSegmentRequest(segment=s.Segment(
            segment_id="m", rule='visit_count >= 3 and\n    context.device_typ == "mobile"')), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT)
        assert "line 2, column 5" in err.details() and "device_type" in err.details()
        await assert_status(stub.PutSegment(s.PutSegmentRequest(segment=s.Segment(segment_id="vip", rule="true")),
                                            timeout=5), grpc.StatusCode.FAILED_PRECONDITION)
        await assert_status(stub.DeleteSegment(s.DeleteSegmentRequest(segment_id="guest"), timeout=5),
                            grpc.StatusCode.FAILED_PRECONDITION)
        await assert_status(stub.GetSegment(s.GetSegmentRequest(segment_id="nope"), timeout=5),
                            grpc.StatusCode.NOT_FOUND)

        rule = 'visit_count >= 3 and context.device_type == "mobile"'
        put = await stub.PutSegment(s.PutSegmentRequest(segment=s.Segment(
            segment_id="mobile_regulars", rule=rule, priority=500)), timeout=5)
        assert put.rule == rule and put.updated_ms > 0
        got = await stub.GetSegment(s.GetSegmentRequest(segment_id="mobile_regulars"), timeout=5)
        assert got == put
        listed = await stub.ListSegments(s.ListSegmentsRequest(include_builtin=True), timeout=5)
        assert listed.segments[0].segment_id == "mobile_regulars"
        assert {x.segment_id for x in listed.segments if x.builtin} >= {"vip", "new_visitor", "device:*"}
        await stub.PutOffer(s.PutOfferRequest(offer=s.Offer(
            offer_id="app-10", title="10% in the app", segment_ids=["mobile_regulars"], priority=5)), timeout=5)
        await stub.PutOffer(s.PutOfferRequest(offer=s.Offer(
            offer_id="welcome", segment_ids=["new_visitor"], priority=9, ends_ms=NOW + 1)), timeout=5)
        await assert_status(stub.PutOffer(s.PutOfferRequest(offer=s.Offer(offer_id="x", segment_ids=["nope"])),
                                          timeout=5), grpc.StatusCode.INVALID_ARGUMENT)

        empty = await stub.Evaluate(s.EvaluateRequest(now_ms=NOW), timeout=5)
        assert list(empty.segment_ids) == ["new_visitor", "guest"]
        assert [o.offer_id for o in empty.offers] == ["welcome"]
        answer = await stub.Evaluate(s.EvaluateRequest(
            profile=c.Profile(visit_count=4), context=c.Context(device_type="mobile"), now_ms=NOW), timeout=5)
        assert list(answer.segment_ids) == ["mobile_regulars", "returning_visitor", "guest", "device:mobile"]
        assert [o.offer_id for o in answer.offers] == ["app-10"]
        offers = await stub.ListOffers(s.ListOffersRequest(), timeout=5)
        assert [o.offer_id for o in offers.offers] == ["welcome", "app-10"]

        ok = await stub.ValidateRule(s.ValidateRuleRequest(rule='events("PURCHASE", days=30) == 0'), timeout=5)
        assert ok.valid and list(ok.fields) == ["daily_events"]
        bad = await stub.ValidateRule(s.ValidateRuleRequest(rule="visit_count >= "), timeout=5)
        assert (bad.valid, bad.line, bad.column) == (False, 1, 16) and "ends too early" in bad.error

        err = await assert_status(stub.EstimateSize(s.EstimateSizeRequest(rule="visit_count >"), timeout=5),
                                  grpc.StatusCode.INVALID_ARGUMENT)
        assert "line 1, column 14" in err.details()
        # nothing listens on profile_addresses: no estimate rather than a wrong one
        await assert_status(stub.EstimateSize(s.EstimateSizeRequest(segment_id="vip"), timeout=10),
                            grpc.StatusCode.UNAVAILABLE)

        deleted = await stub.DeleteOffer(s.DeleteOfferRequest(offer_id="app-10"), timeout=5)
        assert deleted.deleted
        deleted = await stub.DeleteSegment(s.DeleteSegmentRequest(segment_id="mobile_regulars"), timeout=5)
        assert deleted.deleted


async def test_definitions_survive_a_server_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    async with serving(build_service(cfg), cfg) as running, channel_to(running) as channel:
        stub = segment_pb2_grpc.SegmentServiceStub(channel)
        await stub.PutSegment(s.PutSegmentRequest(segment=s.Segment(segment_id="big", rule="total_spend > 100",
                                                                    priority=300)), timeout=5)
        await stub.PutOffer(s.PutOfferRequest(offer=s.Offer(offer_id="thanks", segment_ids=["big"])), timeout=5)
    assert (tmp_path / "segmentation" / "data.mdb").exists()
    async with serving(build_service(cfg), cfg) as running, channel_to(running) as channel:
        stub = segment_pb2_grpc.SegmentServiceStub(channel)
        listed = await stub.ListSegments(s.ListSegmentsRequest(), timeout=5)
        assert [x.segment_id for x in listed.segments] == ["big"]
        answer = await stub.Evaluate(s.EvaluateRequest(profile=c.Profile(total_spend=500)), timeout=5)
        assert answer.segment_ids[0] == "big" and [o.offer_id for o in answer.offers] == ["thanks"]


def test_config_defaults_and_environment() -> None:
    from services.common.config import load_config

    cfg = load_config(SegmentationConfig, "segmentation", [], {"VITRINE_SEGMENTATION_PROFILE_ADDRESSES": "a:1, b:2",
                                                                "VITRINE_DATA_DIR": "/d"},
                      defaults={"port": DEFAULT_PORT})
    assert (cfg.port, cfg.data_dir, cfg.profile_targets) == (50053, "/d", ("a:1", "b:2"))
    assert cfg.cart_abandon_minutes == 60 and cfg.at_risk_quiet_days == 60
