"""recently_viewed_counts: views per recently viewed product, in the fold, merge, consent
withdrawal, the read-time view, older stored profiles and through the service."""

from __future__ import annotations

from pathlib import Path

from services.profile import config as C
from services.profile import fold
from services.profile.store import LmdbProfileStore
from tests.profile.conftest import Profiles
from tests.profile.helpers import ET, MIN_MS, ev
from vitrine.v1 import common_pb2, profile_pb2

T0 = 1_780_000_000_000


def run(*events: common_pb2.Event, state: profile_pb2.StoredProfile | None = None) -> profile_pb2.StoredProfile:
    state = state or fold.new_state("u1")
    for event in events:
        fold.apply_event(state, event)
    return state


def view(product: str, minute: int) -> common_pb2.Event:
    return ev(ET.PRODUCT_VIEW, t=T0 + minute * MIN_MS, product_id=product)


def counts(state: profile_pb2.StoredProfile) -> dict[str, int]:
    public = fold.public_view(state, T0 + 60 * MIN_MS)
    assert len(public.recently_viewed_counts) == len(public.recently_viewed)
    return dict(zip(public.recently_viewed, public.recently_viewed_counts, strict=True))


def test_views_are_counted_per_recent_product_newest_first() -> None:
    state = run(view("a", 0), view("b", 1), view("a", 2), view("a", 3), view("c", 4))
    public = fold.public_view(state, T0 + 60 * MIN_MS)
    assert list(public.recently_viewed) == ["c", "a", "b"]
    assert list(public.recently_viewed_counts) == [1, 3, 1]
    assert not state.profile.recently_viewed_counts  # kept beside the list, not in the stored Profile


def test_a_late_view_counts_and_keeps_the_position() -> None:
    state = run(view("a", 5), view("b", 6), view("a", 1))
    assert list(state.profile.recently_viewed) == ["b", "a"] and counts(state) == {"a": 2, "b": 1}


def test_a_product_that_falls_out_of_the_list_starts_again() -> None:
    events = [view("old", 0)] + [view(f"p{i}", 1 + i) for i in range(C.RECENTLY_VIEWED_LENGTH)]
    state = run(*events, view("old", 100))
    assert counts(state)["old"] == 1 and len(state.recently_viewed_counts) == C.RECENTLY_VIEWED_LENGTH


def test_merge_adds_the_counts_of_the_same_product() -> None:
    customer = run(view("a", 0), view("b", 1))
    anonymous = run(view("a", 2), view("a", 3), view("c", 4))
    fold.merge_into(customer, anonymous)
    assert counts(customer) == {"a": 3, "b": 1, "c": 1}
    assert list(customer.profile.recently_viewed) == ["c", "a", "b"]


def test_withdrawn_personalization_forgets_the_counts() -> None:
    state = run(view("a", 0), view("a", 1))
    fold.clear_behaviour(state)
    assert not state.recently_viewed_counts and counts(state) == {}


def test_a_profile_stored_before_the_counts_counts_one_each() -> None:
    state = run(view("a", 0), view("b", 1))
    del state.recently_viewed_counts[:]  # as stored by the previous release
    assert counts(state) == {"a": 1, "b": 1}
    run(view("a", 2), state=state)
    assert counts(state) == {"a": 2, "b": 1}


async def test_counts_through_the_service(profiles: Profiles) -> None:
    events = [ev(ET.PRODUCT_VIEW, user="viewer", product_id=p, event_id=f"v{i}") for i, p in enumerate("abab")]
    await profiles.stub.TrackBatch(profile_pb2.TrackBatchRequest(events=events), timeout=10)
    profile = await profiles.stub.GetProfile(profile_pb2.GetProfileRequest(user_id="viewer"), timeout=10)
    assert dict(zip(profile.recently_viewed, profile.recently_viewed_counts, strict=True)) == {"a": 2, "b": 2}


def test_an_imported_profile_keeps_its_counts(tmp_path: Path) -> None:
    store = LmdbProfileStore(tmp_path, sync=False)
    try:
        public = fold.public_view(run(view("a", 0), view("a", 1), view("b", 2)), T0 + 60 * MIN_MS)
        public.user_id = "moved"
        state = store.import_profile(public, [], T0)
        assert counts(state) == {"a": 2, "b": 1} and not state.profile.recently_viewed_counts
    finally:
        store.close()
