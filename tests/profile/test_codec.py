"""The store's codec (keys.py) and its one write-transaction context manager (transaction.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import ResourceExhausted
from services.profile import fold
from services.profile.keys import SEQ, logged_event_bytes
from services.profile.store import LmdbProfileStore
from services.profile.transaction import write_transaction
from tests.profile.helpers import ET, ev
from vitrine.v1 import profile_pb2

T0 = 1_780_000_000_000


@pytest.mark.parametrize("url_length", [0, 100, 300, 20_000])  # one-byte, two-byte and three-byte lengths
@pytest.mark.parametrize("flags", [0, fold.FLAG_NO_PERSONALIZATION])
def test_hand_built_logged_event_parses_as_the_message(url_length: int, flags: int) -> None:
    event = ev(ET.PRODUCT_VIEW, user="shopper-1", t=T0, page_url="u" * url_length)
    raw = logged_event_bytes(event.SerializeToString(), b"customer-9", flags)
    item = profile_pb2.LoggedEvent.FromString(raw)
    assert item.event == event and item.canonical_user_id == "customer-9"
    assert item.personalization_off == bool(flags) and item.WhichOneof("item") == "event"
    expected = profile_pb2.LoggedEvent(event=event, canonical_user_id="customer-9", personalization_off=bool(flags))
    assert raw == expected.SerializeToString()  # the same bytes protobuf itself writes
    own = LmdbProfileStore.feed_item(7, logged_event_bytes(event.SerializeToString(), b"", flags))
    assert (own.seq, own.canonical_user_id, own.event) == (7, "shopper-1", event)  # filled in on reading


def test_a_failing_block_changes_nothing_and_publishes_nothing(tmp_path: Path) -> None:
    store = LmdbProfileStore(tmp_path, sync=False)
    published: list[dict[bytes, int]] = []
    store.on_commit = published.append
    try:
        with pytest.raises(RuntimeError), write_transaction(store) as w:
            w.txn.put(b"someone", b"x", db=store.profiles)
            w.append_log(profile_pb2.LoggedEvent(canonical_user_id="someone"))
            w.rfm([(None, (20_000, 1, 10.0))])
            raise RuntimeError("a bug half-way")
        assert store.count("profiles") == 0 and store.count("log") == 0
        assert store.log_bounds() == (1, 0) and published == [] and store.rfm.total == 0
        with write_transaction(store) as w:  # discard: a no-op write
            w.txn.put(b"someone", b"x", db=store.profiles)
            w.discard()
        assert store.count("profiles") == 0
    finally:
        store.close()


def test_a_commit_advances_seq_and_publishes_rfm_after_it(tmp_path: Path) -> None:
    store = LmdbProfileStore(tmp_path, sync=False)
    published: list[dict[bytes, int]] = []
    store.on_commit = published.append
    try:
        with write_transaction(store) as w:
            first = w.append_log(profile_pb2.LoggedEvent(canonical_user_id="a"))
            second = w.append_log(profile_pb2.LoggedEvent(canonical_user_id="b"))
            w.rfm([(None, (20_000, 1, 10.0))])
            w.rfm([((20_000, 1, 10.0), (20_001, 2, 30.0))])  # deltas of one key add up
        assert (first, second) == (1, 2) and store.log_bounds() == (1, 2)
        assert [seq for seq, _ in store.read_log(0, 10)] == [1, 2]
        assert len(published) == 1 and all(v == 1 for v in published[0].values())
        assert store.rfm.total == 1
        assert SEQ.unpack(SEQ.pack(2))[0] == 2
    finally:
        store.close()


def test_a_full_map_is_resource_exhausted_and_changes_nothing(tmp_path: Path) -> None:
    store = LmdbProfileStore(tmp_path, sync=False, map_size_mb=1)
    try:
        counts = (0, 0)
        with pytest.raises(ResourceExhausted, match="map-size-mb"):
            for i in range(100):
                store.apply_events([ev(ET.PAGE_VIEW, user=f"u{i}-{k}", t=T0, event_id=f"e{i}-{k}",
                                       page_url="p" * 1000) for k in range(50)], T0)
                counts = (store.count("log"), store.count("profiles"))
        assert (store.count("log"), store.count("profiles")) == counts  # the failed group left nothing
        assert store.get("u0-0") is not None
    finally:
        store.close()
