"""Experiments through a real in-process SegmentService: validation statuses, durability across a
restart, assignments inside Evaluate, results over gRPC."""

from __future__ import annotations

import math
from pathlib import Path

import grpc

from services.segmentation.app import build_service
from services.segmentation.config import SegmentationConfig
from tests.support import assert_status, channel_to, serving
from vitrine.ports import free_port
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import recommend_pb2 as r
from vitrine.v1 import segment_pb2 as s
from vitrine.v1 import segment_pb2_grpc

NOW = 1_763_900_000_000
BAD = grpc.StatusCode.INVALID_ARGUMENT


def config(tmp_path: Path) -> SegmentationConfig:
    return SegmentationConfig(port=0, data_dir=str(tmp_path), profile_addresses=f"127.0.0.1:{free_port()}",
                              scan_timeout_seconds=5.0)


def variants(*weights: int) -> list[s.Variant]:
    return [s.Variant(variant_id=f"v{i}", weight=w, strategy=r.FOR_YOU if i else r.TRENDING, k=4 + i)
            for i, w in enumerate(weights)]


def experiment(**fields: object) -> s.Experiment:
    values: dict[str, object] = {"experiment_id": "home", "slot_id": "home-top", "variants": variants(1, 1),
                                 "starts_ms": NOW - 1000, "ends_ms": NOW + 86_400_000}
    values.update(fields)
    return s.Experiment(**values)  # type: ignore[arg-type]


async def put(stub: segment_pb2_grpc.SegmentServiceStub, e: s.Experiment) -> s.Experiment:
    return await stub.PutExperiment(s.PutExperimentRequest(experiment=e), timeout=5)


async def test_experiments_over_grpc(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    async with serving(build_service(cfg), cfg) as running, channel_to(running) as channel:
        stub = segment_pb2_grpc.SegmentServiceStub(channel)
        for bad, words in [
            (experiment(variants=variants(1)), "2..20 variants"),
            (experiment(variants=variants(1, 0)), "weight 0"),
            (experiment(variants=[*variants(1), *variants(1)]), "appears twice"),
            (experiment(slot_id=""), "slot_id is empty"),
            (experiment(starts_ms=NOW, ends_ms=NOW - 1), "must be after starts_ms"),
            (experiment(segment_ids=["no-such-segment"]), "no segment 'no-such-segment'"),
            (experiment(experiment_id="Bad Id"), "experiment_id"),
            (experiment(variants=[s.Variant(variant_id="a", weight=1, k=500), *variants(1)]), "k 500"),
        ]:
            err = await assert_status(put(stub, bad), BAD)
            assert words in err.details(), err.details()
        await assert_status(stub.GetExperiment(s.GetExperimentRequest(experiment_id="home"), timeout=5),
                            grpc.StatusCode.NOT_FOUND)
        await assert_status(stub.GetExperimentResults(s.GetExperimentResultsRequest(experiment_id="home"),
                                                      timeout=5), grpc.StatusCode.NOT_FOUND)

        await stub.PutSegment(s.PutSegmentRequest(segment=s.Segment(segment_id="mobile",
                                                                    rule='context.device_type == "mobile"')),
                              timeout=5)
        stored = await put(stub, experiment(segment_ids=["mobile"]))
        assert stored.updated_ms > 0 and stored.name == "home"
        clash = await assert_status(put(stub, experiment(experiment_id="home-2", starts_ms=NOW)),
                                    grpc.StatusCode.FAILED_PRECONDITION)
        assert "home-top" in clash.details()
        await put(stub, experiment(experiment_id="later", slot_id="home-top", starts_ms=NOW + 86_400_000, ends_ms=0))
        err = await assert_status(stub.DeleteSegment(s.DeleteSegmentRequest(segment_id="mobile"), timeout=5),
                                  grpc.StatusCode.FAILED_PRECONDITION)
        assert "home" in err.details()

        mobile = c.Context(device_type="mobile")
        seen = {}
        for i in range(200):
            reply = await stub.Evaluate(s.EvaluateRequest(profile=c.Profile(user_id=f"u{i}"), context=mobile,
                                                          now_ms=NOW), timeout=5)
            (a,) = reply.assignments
            assert (a.experiment_id, a.slot_id) == ("home", "home-top")
            assert (a.strategy, a.k) == ((r.TRENDING, 4) if a.variant_id == "v0" else (r.FOR_YOU, 5))
            seen[f"u{i}"] = a.variant_id
        assert set(seen.values()) == {"v0", "v1"}
        desktop = await stub.Evaluate(s.EvaluateRequest(profile=c.Profile(user_id="u1"),
                                                        context=c.Context(device_type="desktop"), now_ms=NOW),
                                      timeout=5)
        assert list(desktop.assignments) == []          # the entry filter
        ended = await stub.Evaluate(s.EvaluateRequest(profile=c.Profile(user_id="u1"), context=mobile,
                                                      now_ms=NOW + 86_400_000), timeout=5)
        assert [a.experiment_id for a in ended.assignments] == ["later"]  # "home" ended, "later" started
        merged = await stub.Evaluate(s.EvaluateRequest(profile=c.Profile(user_id="cust", aliases=["u7"]),
                                                       context=mobile, now_ms=NOW), timeout=5)
        assert merged.assignments[0].variant_id == seen["u7"]   # logged in: the visitor's variant

        listed = await stub.ListExperiments(s.ListExperimentsRequest(), timeout=5)
        assert [e.experiment_id for e in listed.experiments] == ["home", "later"]
        results = await stub.GetExperimentResults(s.GetExperimentResultsRequest(experiment_id="home"), timeout=5)
        assert [v.variant_id for v in results.variants] == ["v0", "v1"]
        assert results.variants[0].users == 0 and math.isnan(results.variants[0].conversion_rate)
        assert results.srm_p_value == 1.0 and not results.srm_detected

    async with serving(build_service(cfg), cfg) as running, channel_to(running) as channel:  # a restart
        stub = segment_pb2_grpc.SegmentServiceStub(channel)
        got = await stub.GetExperiment(s.GetExperimentRequest(experiment_id="home"), timeout=5)
        assert got == stored
        reply = await stub.Evaluate(s.EvaluateRequest(profile=c.Profile(user_id="u3"), context=mobile,
                                                      now_ms=NOW), timeout=5)
        assert reply.assignments[0].variant_id == seen["u3"]
        deleted = await stub.DeleteExperiment(s.DeleteExperimentRequest(experiment_id="home"), timeout=5)
        assert deleted.deleted
        again = await stub.DeleteExperiment(s.DeleteExperimentRequest(experiment_id="home"), timeout=5)
        assert not again.deleted
        await stub.DeleteExperiment(s.DeleteExperimentRequest(experiment_id="later"), timeout=5)
        await stub.DeleteSegment(s.DeleteSegmentRequest(segment_id="mobile"), timeout=5)
