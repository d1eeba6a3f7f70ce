"""Undecodable request bytes: INVALID_ARGUMENT on every kind of RPC (unary, request stream,
server stream, health), counted per method, logged at most once per interval. Before the fix
grpc.aio answered UNKNOWN ("Unexpected DecodeError") with an ERROR traceback per request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.decoding import RateLimitedLog
from services.profile.app import ProfileService
from services.profile.config import ProfileConfig
from tests.support import assert_status, channel_to, serving
from vitrine.v1 import common_pb2

GARBAGE = b"\xff\xff\xff\xff\x0f"  # a field number 0 / truncated varint: never a valid message
TRACK = "/vitrine.v1.ProfileService/Track"


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    service = ProfileService(ProfileConfig(port=0, data_dir=str(tmp_path), purge_interval_seconds=0,
                                           writer_process=False))
    async with serving(service, service.config) as running, channel_to(running) as ch:
        yield ch


def undecodable(method: str) -> float:
    return REGISTRY.get_sample_value("vitrine_grpc_server_undecodable_requests_total",
                                     {"service": "profile", "method": method}) or 0.0


async def test_unary_garbage_is_invalid_argument_counted_and_logged_once(
        channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture) -> None:
    before = undecodable(TRACK)
    with caplog.at_level(logging.INFO):
        for _ in range(50):
            err = await assert_status(channel.unary_unary(TRACK)(GARBAGE, timeout=5),
                                      grpc.StatusCode.INVALID_ARGUMENT)
    assert "not a valid protobuf message" in (err.details() or "")
    assert undecodable(TRACK) - before == 50
    lines = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(lines) <= 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_bad_message_in_a_request_stream_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    good = common_pb2.Event(event_id="e1", user_id="u1", type=common_pb2.PAGE_VIEW).SerializeToString()
    call = channel.stream_unary("/vitrine.v1.ProfileService/TrackStream")(iter([good, GARBAGE]), timeout=5)
    err = await assert_status(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert "request stream" in (err.details() or "")


async def test_server_stream_and_health_garbage_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream("/vitrine.v1.ProfileService/ScanProfiles")(GARBAGE, timeout=5)

    async def drain() -> None:
        async for _ in call:
            pass

    await assert_status(drain(), grpc.StatusCode.INVALID_ARGUMENT)
    await assert_status(channel.unary_unary("/grpc.health.v1.Health/Check")(GARBAGE, timeout=5),
                        grpc.StatusCode.INVALID_ARGUMENT)


def test_rate_limited_log_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        assert limited.warning("m", "bad %s", "x")
        assert not any(limited.warning("m", "bad %s", "x") for _ in range(9))
        assert limited.warning("other", "bad %s", "y")  # keys are independent
        now[0] = 61.0
        assert limited.warning("m", "bad %s", "x")
    assert [r.fields["suppressed"] for r in caplog.records if r.fields["method"] == "m"] == [0, 9]  # type: ignore[attr-defined]
