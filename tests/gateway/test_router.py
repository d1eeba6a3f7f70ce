"""The shard router on its own: stable hashing, and the cross-shard protocol against
in-memory shards that behave as services/gateway/README.md ("Shard protocol") asks."""

from __future__ import annotations

import collections
import hashlib
from collections.abc import AsyncIterator

import grpc
import pytest

from services.common.errors import FailedPrecondition
from services.gateway.router import ProfileRouter, jump_hash, stable_key
from vitrine.v1 import common_pb2, profile_pb2


def test_stable_key_is_blake2b_and_fixed() -> None:
    # Pinned: a change here would move every shopper to another shard.
    assert stable_key("user-1") == int.from_bytes(hashlib.blake2b(b"user-1", digest_size=8).digest(), "big")
    assert stable_key("user-1") == 0x9AAC5A8621EAE188
    assert stable_key("user-1") != stable_key("user-2")


def test_jump_hash_range_balance_and_minimal_movement() -> None:
    keys = [stable_key(f"user-{i}") for i in range(20_000)]
    for n in (1, 2, 3, 7):
        counts = collections.Counter(jump_hash(k, n) for k in keys)
        assert set(counts) == set(range(n))
        assert max(counts.values()) < 1.1 * len(keys) / n
    # Growing from 3 to 4 shards moves keys only to the new shard, about a quarter of them.
    moved = [(jump_hash(k, 3), jump_hash(k, 4)) for k in keys]
    assert all(after in (before, 3) for before, after in moved)
    assert 0.2 < sum(after == 3 for _, after in moved) / len(keys) < 0.3
    with pytest.raises(ValueError):
        jump_hash(1, 0)


def test_pinned_jump_hash_values() -> None:
    # Regression values: the shard of a shopper must never change between releases.
    assert [jump_hash(stable_key(f"user-{i}"), 3) for i in range(12)] == [0, 2, 0, 0, 0, 1, 2, 1, 2, 0, 1, 2]
    assert [jump_hash(k, 10) for k in (1, 2, 3, 2**63, 2**64 - 1)] == [6, 6, 8, 5, 9]
    assert [jump_hash(k, 1) for k in range(5)] == [0] * 5


def _error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class MemoryShard:
    """One profile shard as the protocol needs it (no LMDB, no fold beyond counting)."""

    def __init__(self) -> None:
        self.profiles: dict[str, common_pb2.Profile] = {}
        self.events: dict[str, list[common_pb2.Event]] = collections.defaultdict(list)
        self.aliases: dict[str, str] = {}

    def _local(self, user_id: str) -> str:
        return self.aliases.get(user_id, user_id)

    async def GetProfile(self, request, **_):  # type: ignore[no-untyped-def]
        profile = self.profiles.get(self._local(request.user_id))
        if profile is None:
            raise _error(grpc.StatusCode.NOT_FOUND, "unknown user")
        return profile

    async def Track(self, request, **_):  # type: ignore[no-untyped-def]
        user_id = self._local(request.event.user_id)
        profile = self.profiles.setdefault(user_id, common_pb2.Profile(user_id=user_id))
        profile.event_count += 1
        self.events[user_id].append(request.event)
        return profile_pb2.TrackResponse(applied=True, user_id=user_id)

    async def Identify(self, request, **_):  # type: ignore[no-untyped-def]
        customer = self.profiles.setdefault(request.customer_id, common_pb2.Profile(user_id=request.customer_id))
        anon = self.profiles.pop(request.anonymous_id, None)
        if anon is not None:
            customer.event_count += anon.event_count
            self.events[request.customer_id].extend(self.events.pop(request.anonymous_id, []))
        customer.registered = True
        customer.aliases.append(request.anonymous_id)
        self.aliases[request.anonymous_id] = request.customer_id
        return customer

    async def ImportProfile(self, request, **_):  # type: ignore[no-untyped-def]
        incoming = request.profile
        stored = self.profiles.setdefault(incoming.user_id, common_pb2.Profile(user_id=incoming.user_id))
        stored.event_count += incoming.event_count
        stored.registered = stored.registered or incoming.registered
        stored.customer_id = incoming.customer_id or stored.customer_id
        stored.aliases.extend(a for a in incoming.aliases if a not in stored.aliases)
        stored.traits.update(incoming.traits)
        self.events[incoming.user_id].extend(request.events)
        return stored

    async def PutAlias(self, request, **_):  # type: ignore[no-untyped-def]
        created = request.alias_id not in self.aliases
        self.aliases[request.alias_id] = request.target_id
        return profile_pb2.PutAliasResponse(created=created)

    async def ResolveAlias(self, request, **_):  # type: ignore[no-untyped-def]
        return profile_pb2.ResolveAliasResponse(target_id=self.aliases.get(request.user_id, ""))

    def GetUserEvents(self, request, **_) -> AsyncIterator[common_pb2.Event]:  # type: ignore[no-untyped-def]
        events = list(self.events.get(request.user_id, []))

        async def stream() -> AsyncIterator[common_pb2.Event]:
            for event in events:
                yield event
        return stream()

    async def DeleteProfile(self, request, **_):  # type: ignore[no-untyped-def]
        user_id = request.user_id
        profile = self.profiles.pop(user_id, None)
        self.events.pop(user_id, None)
        dropped = [a for a, t in self.aliases.items() if t == user_id or a == user_id]
        for alias in dropped:
            del self.aliases[alias]
        return profile_pb2.DeleteProfileResponse(deleted=profile is not None or bool(dropped),
                                                 aliases_deleted=len(dropped))


def ids_on_distinct_shards(router: ProfileRouter) -> tuple[str, str]:
    anon = "anon-0"
    for i in range(1000):
        customer = f"cust-{i}"
        if router.shard_for(customer) != router.shard_for(anon):
            return anon, customer
    raise AssertionError("no pair on distinct shards")


def track(user_id: str, event_id: str) -> profile_pb2.TrackRequest:
    return profile_pb2.TrackRequest(event=common_pb2.Event(event_id=event_id, user_id=user_id,
                                                           type=common_pb2.PAGE_VIEW))


async def test_cross_shard_identify_moves_the_profile_and_leaves_an_alias() -> None:
    shards = [MemoryShard() for _ in range(3)]
    router = ProfileRouter(shards)
    anon, customer = ids_on_distinct_shards(router)
    a, c = shards[router.shard_for(anon)], shards[router.shard_for(customer)]
    for i in range(3):
        await router.track(track(anon, f"a{i}"))
    await router.track(track(customer, "c0"))
    merged = await router.identify(profile_pb2.IdentifyRequest(anonymous_id=anon, customer_id=customer,
                                                               traits={"tier": "gold"}))
    assert merged.user_id == customer and merged.event_count == 4 and merged.registered
    assert anon in merged.aliases and merged.traits["tier"] == "gold"
    assert anon not in a.profiles and a.aliases == {anon: customer}   # only an alias is left
    assert [e.event_id for e in c.events[customer]] == ["c0", "a0", "a1", "a2"]
    # Reads and writes by either id reach the merged profile, also from a fresh router (cold cache).
    fresh = ProfileRouter(shards)
    assert (await fresh.get_profile(anon, 1.0)).user_id == customer
    reply = await fresh.track(track(anon, "a9"))
    assert reply.user_id == customer and c.profiles[customer].event_count == 5
    assert (await fresh.get_profile(customer, 1.0)).event_count == 5
    # Identify again is harmless; another customer for the same anonymous id is refused.
    again = await fresh.identify(profile_pb2.IdentifyRequest(anonymous_id=anon, customer_id=customer))
    assert again.event_count == 5
    other = next(f"cust-x{i}" for i in range(100) if fresh.shard_for(f"cust-x{i}") != fresh.shard_for(anon))
    with pytest.raises(FailedPrecondition):
        await fresh.identify(profile_pb2.IdentifyRequest(anonymous_id=anon, customer_id=other))


async def test_erasure_by_either_id_removes_profile_and_remote_aliases() -> None:
    shards = [MemoryShard() for _ in range(3)]
    router = ProfileRouter(shards)
    anon, customer = ids_on_distinct_shards(router)
    await router.track(track(anon, "a0"))
    await router.identify(profile_pb2.IdentifyRequest(anonymous_id=anon, customer_id=customer))
    reply = await ProfileRouter(shards).delete_profile(profile_pb2.DeleteProfileRequest(user_id=anon))
    assert reply.deleted
    assert all(not s.profiles and not s.aliases and not any(s.events.values()) for s in shards)
    assert await router.get_profile(anon, 1.0) is None
    assert await router.get_profile(customer, 1.0) is None


async def test_same_shard_identify_is_forwarded() -> None:
    shards = [MemoryShard() for _ in range(3)]
    router = ProfileRouter(shards)
    anon = "anon-0"
    customer = next(f"c{i}" for i in range(1000) if router.shard_for(f"c{i}") == router.shard_for(anon))
    await router.track(track(anon, "a0"))
    merged = await router.identify(profile_pb2.IdentifyRequest(anonymous_id=anon, customer_id=customer))
    assert merged.user_id == customer and merged.event_count == 1
    assert (await router.get_profile(anon, 1.0)).user_id == customer


async def test_resolve_alias_unimplemented_degrades_to_home_shard() -> None:
    class Old(MemoryShard):
        async def ResolveAlias(self, request, **_):  # type: ignore[no-untyped-def]
            raise _error(grpc.StatusCode.UNIMPLEMENTED)

    router = ProfileRouter([Old(), Old()])
    assert await router.get_profile("nobody", 1.0) is None
    assert (await router.track(track("u", "e"))).applied


async def test_ids_merged_earlier_follow_the_move() -> None:
    shards = [MemoryShard() for _ in range(3)]
    router = ProfileRouter(shards)
    anon, customer = ids_on_distinct_shards(router)
    home = shards[router.shard_for(anon)]
    older = next(f"old-{i}" for i in range(1000) if router.shard_for(f"old-{i}") == router.shard_for(anon))
    await router.track(track(anon, "a0"))
    home.profiles[anon].aliases.append(older)  # merged into anon earlier on the same shard
    home.aliases[older] = anon
    await router.identify(profile_pb2.IdentifyRequest(anonymous_id=anon, customer_id=customer))
    fresh = ProfileRouter(shards)
    assert (await fresh.get_profile(older, 1.0)).user_id == customer
