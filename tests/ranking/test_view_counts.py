"""The profile's view counts reach Recommend: the gateway's UserSignals carry them when they are parallel
to the recent views (and leave them out otherwise, which Recommend would reject)."""

from __future__ import annotations

from services.gateway.composer import user_signals
from vitrine.v1 import common_pb2


def test_view_counts_ride_with_the_recent_views() -> None:
    profile = common_pb2.Profile(user_id="u", recently_viewed=[f"p{i}" for i in range(80)],
                                 recently_viewed_counts=[i % 3 + 1 for i in range(80)])
    signals = user_signals(profile)
    assert len(signals.recent_view_counts) == len(signals.recent_product_ids) == 50
    assert list(signals.recent_view_counts[:4]) == [1, 2, 3, 1]
    older = common_pb2.Profile(user_id="u", recently_viewed=["a", "b"])   # before the profile counted
    assert not user_signals(older).recent_view_counts
