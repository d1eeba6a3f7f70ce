"""The wire reader's fallbacks to protobuf's parser are counted and logged once, and the A/B
switch (SegmentationConfig.wire_reader) reads the same through the protobuf API alone."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from prometheus_client import REGISTRY

from scoring.rules import compile_rule
from scoring.rules.wire import MALFORMED
from services.segmentation.fields import SCHEMA, ColumnExtractor, FeatureReader, WireReader
from tests.segmentation.test_profile_adapter import NOW, PROGRAMS, _everything_set
from vitrine.v1 import common_pb2


def _fallbacks(path: str) -> float:
    return REGISTRY.get_sample_value("vitrine_segmentation_wire_fallbacks_total", {"path": path}) or 0.0


class Refusing:  # what the kernel answers for bytes its reads do not fit
    def read(self, message: bytes, now_ms: int) -> None:
        return None

    def run(self, message: bytes, now_ms: float) -> np.ndarray:
        return np.array([MALFORMED])


def test_evaluate_fallbacks_are_counted_each_time_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    program = PROGRAMS[-1]
    profile, context = _everything_set()
    reader = WireReader(program)
    reader.wire = Refusing()  # type: ignore[assignment]
    before = _fallbacks("evaluate")
    with caplog.at_level(logging.WARNING, logger="services.segmentation.fields"):
        for _ in range(3):
            assert reader.matching(profile, context, NOW).tolist() == \
                FeatureReader(program).matching(profile, context, NOW).tolist()
        reader.read(profile, context, NOW)
    assert _fallbacks("evaluate") == before + 4
    logged = [r for r in caplog.records if "evaluate path" in r.getMessage()]
    assert len(logged) == (0 if before else 1)


def test_the_protobuf_switch_reads_the_same_without_the_kernel() -> None:
    profile, context = _everything_set()
    for program in PROGRAMS:
        wire, plain = WireReader(program), WireReader(program, wire=False)
        plain.wire = Refusing()  # type: ignore[assignment]  # never asked: a call would fall back
        before = _fallbacks("evaluate")
        assert plain.matching(profile, context, NOW).tolist() == wire.matching(profile, context, NOW).tolist()
        assert plain.read(profile, context, NOW).tolist() == wire.read(profile, context, NOW).tolist()
        assert _fallbacks("evaluate") == before


def test_estimate_rows_the_kernel_cannot_read_are_counted() -> None:
    rule = compile_rule("visit_count >= 2", SCHEMA)
    extractor = ColumnExtractor(rule)
    good = common_pb2.Profile(user_id="a", visit_count=3).SerializeToString()
    before = _fallbacks("estimate")
    # visit_count with the wrong wire type: beyond the kernel's reads; protobuf's parser keeps it
    # as an unknown field and reads the default.
    odd = bytes([6 << 3 | 2, 1, 0x41])
    batch = extractor.batch([good, odd], NOW)
    assert _fallbacks("estimate") == before + 1
    assert rule.evaluate_columns(batch, NOW).tolist() == [True, False]
