"""ImportProfile with hostile numbers: every numeric field range-checked (INVALID_ARGUMENT naming
the field, nothing stored), and the fold saturating for values that pass, however often they merge.
Before the fix 7 of 500 fuzzed imports answered INTERNAL (`ValueError: Value out of range` in
fold.merge_into, `cannot convert float NaN to integer` in the RFM buckets)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.common.errors import InvalidArgument
from services.profile import fold
from services.profile.app import ProfileService
from services.profile.config import ProfileConfig
from services.profile.import_checks import MAX_IMPORT_COUNT_32, MAX_IMPORT_DAILY, check_imported_profile
from tests.support import assert_status, channel_to, serving
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

NOW_MS = 1_764_720_000_000


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[profile_pb2_grpc.ProfileServiceStub]:
    service = ProfileService(ProfileConfig(port=0, data_dir=str(tmp_path), purge_interval_seconds=0))
    async with serving(service, service.config) as running, channel_to(running) as channel:
        yield profile_pb2_grpc.ProfileServiceStub(channel)


HOSTILE = [
    ("visit_count", common_pb2.Profile(user_id="u", visit_count=2**31 - 1)),
    ("visit_count", common_pb2.Profile(user_id="u", visit_count=-5)),
    ("event_count", common_pb2.Profile(user_id="u", event_count=2**63 - 1)),
    ("total_spend", common_pb2.Profile(user_id="u", total_spend=math.nan)),
    ("total_spend", common_pb2.Profile(user_id="u", total_spend=math.inf)),
    ("avg_order_value", common_pb2.Profile(user_id="u", avg_order_value=-1.0)),
    ("last_seen_ms", common_pb2.Profile(user_id="u", last_seen_ms=2**62)),
    ("first_seen_ms", common_pb2.Profile(user_id="u", first_seen_ms=-1)),
    ("cart[0].quantity", common_pb2.Profile(user_id="u", cart=[common_pb2.CartItem(product_id="p", quantity=-2)])),
    ("cart[0].price", common_pb2.Profile(user_id="u", cart=[common_pb2.CartItem(product_id="p", price=math.nan)])),
    ("category_affinity", common_pb2.Profile(user_id="u", category_affinity={"shoes": math.inf})),
    ("daily_events[0].count", common_pb2.Profile(
        user_id="u", daily_events=[common_pb2.DailyEventCount(day=20_000, type=2, count=MAX_IMPORT_DAILY + 1)])),
    ("screen_width", common_pb2.Profile(user_id="u", last_context=common_pb2.Context(screen_width=2**31 - 1))),
]


@pytest.mark.parametrize(("field", "profile"), HOSTILE, ids=[f"{f}-{i}" for i, (f, _) in enumerate(HOSTILE)])
async def test_out_of_range_numbers_are_invalid_argument(stub: profile_pb2_grpc.ProfileServiceStub, field: str,
                                                         profile: common_pb2.Profile) -> None:
    err = await assert_status(stub.ImportProfile(profile_pb2.ImportProfileRequest(profile=profile), timeout=10),
                              grpc.StatusCode.INVALID_ARGUMENT)
    assert field.split("[")[0] in (err.details() or ""), err.details()
    await assert_status(stub.GetProfile(profile_pb2.GetProfileRequest(user_id="u"), timeout=10),
                        grpc.StatusCode.NOT_FOUND)


async def test_repeated_imports_at_the_limit_saturate(stub: profile_pb2_grpc.ProfileServiceStub) -> None:
    big = common_pb2.Profile(
        user_id="u", visit_count=MAX_IMPORT_COUNT_32, purchase_count=MAX_IMPORT_COUNT_32,
        email_opens=MAX_IMPORT_COUNT_32, event_count=10**12, total_spend=1e12, last_seen_ms=NOW_MS,
        daily_events=[common_pb2.DailyEventCount(day=NOW_MS // 86_400_000 - d, type=2, count=MAX_IMPORT_DAILY)
                      for d in range(90)])
    for _ in range(25):  # 25 x 1e8 visits: past int32 without saturation
        reply = await stub.ImportProfile(profile_pb2.ImportProfileRequest(profile=big), timeout=10)
    assert 0 < reply.visit_count <= fold.COUNT_CEILING_32
    again = await stub.GetProfile(profile_pb2.GetProfileRequest(user_id="u"), timeout=10)
    assert again.visit_count == reply.visit_count
    # The shopper keeps working after saturation: one more event applies.
    event = common_pb2.Event(event_id="after", user_id="u", type=common_pb2.PAGE_VIEW)
    await stub.Track(profile_pb2.TrackRequest(event=event), timeout=10)


def test_saturating_add_caps_at_the_ceiling() -> None:
    assert fold.saturating_add(1, 2) == 3
    assert fold.saturating_add(fold.COUNT_CEILING_32, 1) == fold.COUNT_CEILING_32
    assert fold.saturating_add(2**61, 2**61 + 5, True) == fold.COUNT_CEILING_64


def test_check_names_nested_and_map_fields() -> None:
    with pytest.raises(InvalidArgument, match=r"profile.rfm.frequency"):
        check_imported_profile(common_pb2.Profile(rfm=common_pb2.Rfm(frequency=-1)))
    check_imported_profile(common_pb2.Profile(user_id="u", visit_count=3, total_spend=12.5,
                                              category_affinity={"a": 0.5}, last_seen_ms=NOW_MS))
