"""Profile shard router: which profile shard holds a shopper, and cross-shard merges.

Shopper -> shard is jump consistent hash (Lamping & Veach, 2014) over the first 8
bytes of blake2b(user_id): stable across processes and versions (unlike `hash()`),
and growing from n to n+1 shards moves only 1/(n+1) of the users. One channel and
one stub per shard, opened once.

After a cross-shard Identify the anonymous id's home shard keeps only an alias
(anonymous id -> customer id); the router follows it (ResolveAlias) and caches the
answer in a bounded LRU. With one shard the profile service does all of this itself
and the router only forwards. The protocol is written down in README.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import grpc

from services.common.channel import channel_for
from services.common.config import ServerConfig
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.eventlog.partitions import partition_of
from services.gateway import config as limits
from services.gateway.metrics import ALIAS_LOOKUPS, CROSS_SHARD_IDENTIFY
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

log = logging.getLogger(__name__)

_MASK64 = 0xFFFFFFFFFFFFFFFF
# A profile shard's TrackSummary error: "event <index in its batch> (<event_id>): <reason>".
_EVENT_ERROR = re.compile(r"^event (\d+) ")


def stable_key(user_id: str) -> int:
    """A 64-bit hash of the id that is the same in every process and release."""
    return int.from_bytes(hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: the bucket in [0, buckets) of a 64-bit key."""
    if buckets <= 0:
        raise ValueError("buckets must be positive")
    b, j = -1, 0
    key &= _MASK64
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


class _AliasCache:
    """Bounded LRU of id -> target id ("" = not an alias, trusted only until it expires)."""

    def __init__(self, size: int, negative_ttl: float) -> None:
        self._size = size
        self._ttl = negative_ttl
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, user_id: str) -> str | None:
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        target, expires = entry
        if expires < time.monotonic():
            del self._entries[user_id]
            return None
        self._entries.move_to_end(user_id)
        return target

    def put(self, user_id: str, target: str) -> None:
        expires = math.inf if target else time.monotonic() + self._ttl
        self._entries[user_id] = (target, expires)
        self._entries.move_to_end(user_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def drop(self, *user_ids: str) -> None:
        for user_id in user_ids:
            self._entries.pop(user_id, None)
        # Anything pointing at a dropped id is stale too (rare: erasure, merges).
        stale = [k for k, (t, _) in self._entries.items() if t and t in user_ids]
        for key in stale:
            del self._entries[key]


def _not_found(err: grpc.aio.AioRpcError) -> bool:
    return err.code() == grpc.StatusCode.NOT_FOUND


class ProfileRouter:
    """Routes profile calls to shards; `stubs[i]` is shard i's ProfileService stub."""

    def __init__(self, stubs: Sequence[Any], *, channels: Sequence[grpc.aio.Channel] = (),
                 partitions: int = 0) -> None:
        if not stubs:
            raise ValueError("at least one profile shard is needed")
        self.stubs = list(stubs)
        # Scale-out mode (event log in JetStream): shard i owns the stream partitions p with
        # p % shards == i (services/eventlog/partitions.py), so route by partition, not by jump hash.
        self.partitions = partitions
        self._channels = list(channels)
        self.aliases = _AliasCache(limits.ALIAS_CACHE_SIZE, limits.ALIAS_NEGATIVE_TTL_S)
        self._resolve_unimplemented = False

    @classmethod
    def open(cls, addresses: Sequence[str], config: ServerConfig, *, tls: bool = False,
             partitions: int = 0) -> ProfileRouter:
        channels = [channel_for(address, config, tls=tls) for address in addresses]
        return cls([profile_pb2_grpc.ProfileServiceStub(c) for c in channels], channels=channels,
                   partitions=partitions)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    @property
    def shards(self) -> int:
        return len(self.stubs)

    def shard_for(self, user_id: str) -> int:
        if len(self.stubs) == 1:
            return 0
        if self.partitions:
            return partition_of(user_id, self.partitions) % len(self.stubs)
        return jump_hash(stable_key(user_id), len(self.stubs))

    def _stub(self, user_id: str) -> Any:
        return self.stubs[self.shard_for(user_id)]

    # --- aliases ---------------------------------------------------------------------------

    async def _ask_alias(self, user_id: str, seconds: float) -> str:
        """The target of `user_id` on its home shard ("" = none); cached."""
        if self._resolve_unimplemented:
            return ""
        try:
            reply = await self._stub(user_id).ResolveAlias(
                profile_pb2.ResolveAliasRequest(user_id=user_id), timeout=seconds)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.warning("profile shards do not implement ResolveAlias: cross-shard aliases are not followed")
                self._resolve_unimplemented = True
                return ""
            raise
        target = reply.target_id if reply.target_id != user_id else ""
        ALIAS_LOOKUPS.labels("alias" if target else "none").inc()
        self.aliases.put(user_id, target)
        return target

    async def resolve(self, user_id: str, seconds: float = limits.PROFILE_CALL_TIMEOUT_S) -> str:
        """The id whose profile holds `user_id`'s data: itself, or the customer it was merged into."""
        if len(self.stubs) == 1:
            return user_id
        cached = self.aliases.get(user_id)
        if cached is not None:
            return cached or user_id
        return await self._ask_alias(user_id, seconds) or user_id

    # --- reads -----------------------------------------------------------------------------

    async def get_profile(self, user_id: str, seconds: float, min_seq: int = 0) -> common_pb2.Profile | None:
        """The profile of `user_id` (following aliases), None when unknown; other errors raise.
        `min_seq` (scale-out): the shard waits, bounded, until it has applied that position."""
        if len(self.stubs) == 1:
            try:
                return await self.stubs[0].GetProfile(profile_pb2.GetProfileRequest(user_id=user_id,
                                                                                    min_seq=min_seq),
                                                      timeout=seconds)
            except grpc.aio.AioRpcError as err:
                if _not_found(err):
                    return None
                raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        cached = self.aliases.get(user_id)  # None: not known, "": no alias, else the target
        target = cached or user_id
        try:
            return await self._stub(target).GetProfile(profile_pb2.GetProfileRequest(user_id=target,
                                                                                     min_seq=min_seq),
                                                       timeout=seconds)
        except grpc.aio.AioRpcError as err:
            if not _not_found(err):
                raise
            if cached is not None:
                return None
        # Not on its home shard: maybe merged into a customer on another shard.
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError
        target = await self._ask_alias(user_id, remaining)
        if not target:
            return None
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError
        try:
            return await self._stub(target).GetProfile(profile_pb2.GetProfileRequest(user_id=target),
                                                       timeout=remaining)
        except grpc.aio.AioRpcError as err:
            if _not_found(err):
                return None
            raise

    # --- forwarded profile operations (errors propagate) --------------------------------------

    async def track(self, request: profile_pb2.TrackRequest,
                    seconds: float = limits.PROFILE_CALL_TIMEOUT_S) -> profile_pb2.TrackResponse:
        user_id = request.event.user_id
        target = await self.resolve(user_id, seconds) if user_id else user_id
        if target != user_id:
            event = common_pb2.Event()
            event.CopyFrom(request.event)
            event.user_id = target
            request = profile_pb2.TrackRequest(event=event)
        return await self._stub(target).Track(request, timeout=seconds)

    async def track_batch(self, request: profile_pb2.TrackBatchRequest,
                          seconds: float = limits.PROFILE_CALL_TIMEOUT_S) -> profile_pb2.TrackSummary:
        """Each event to its user's shard, one TrackBatch per shard at once, summaries merged.

        With one shard the request is forwarded as it is (its error is the caller's). With several,
        a shard that fails or does not answer in time leaves its events unacknowledged: they are
        counted as rejected with the reason (safe to resend: event_id is idempotent), while the
        other shards' events are applied; only when no shard acknowledged anything is the first
        error the caller's.
        """
        events = request.events
        if len(events) > limits.MAX_BATCH_EVENTS:
            raise InvalidArgument(f"{len(events)} events in one TrackBatch; at most {limits.MAX_BATCH_EVENTS} "
                                  "(split the batch)")
        if len(self.stubs) == 1:
            return await self.stubs[0].TrackBatch(request, timeout=seconds)
        targets, unresolved = await self._resolve_many({e.user_id for e in events if e.user_id}, seconds)
        batches: dict[int, tuple[list[int], profile_pb2.TrackBatchRequest]] = {}
        summary = profile_pb2.TrackSummary()
        errors: list[tuple[int, str]] = []  # (original index, message)
        for index, event in enumerate(events):
            if event.user_id in unresolved:
                errors.append((index, f"event {index} ({event.event_id}): not acknowledged: "
                                      f"{unresolved[event.user_id]}; safe to resend"))
                continue
            target = targets.get(event.user_id, event.user_id)
            indices, batch = batches.setdefault(self.shard_for(target), ([], profile_pb2.TrackBatchRequest()))
            indices.append(index)
            added = batch.events.add()
            added.CopyFrom(event)
            if target != event.user_id:
                added.user_id = target
        shards = sorted(batches)
        replies = await asyncio.gather(*(self.stubs[s].TrackBatch(batches[s][1], timeout=seconds) for s in shards),
                                       return_exceptions=True)
        failures: list[BaseException] = []
        not_acknowledged = sum(1 for e in events if e.user_id in unresolved)
        for shard, reply in zip(shards, replies, strict=True):
            indices, batch = batches[shard]
            if isinstance(reply, BaseException):
                if not isinstance(reply, grpc.aio.AioRpcError | TimeoutError):
                    raise reply
                failures.append(reply)
                not_acknowledged += len(indices)
                why = (f"{reply.code().name}: {reply.details()}" if isinstance(reply, grpc.aio.AioRpcError)
                       else "no answer in time")
                errors.extend((i, f"event {i} ({events[i].event_id}): not acknowledged: profile shard {shard} "
                                  f"{why}; safe to resend") for i in indices)
                continue
            summary.accepted += reply.accepted
            summary.duplicates += reply.duplicates
            summary.rejected += reply.rejected
            for message in reply.errors:
                match = _EVENT_ERROR.match(message)
                if match and int(match.group(1)) < len(indices):
                    original = indices[int(match.group(1))]
                    errors.append((original, f"event {original} " + message[match.end():]))
                else:
                    errors.append((len(events), f"profile shard {shard}: {message}"))
        if len(failures) == len(shards) and (failures or unresolved):
            # Nothing was acknowledged: the caller's error, as with one shard.
            if failures:
                raise failures[0]
            raise Unavailable(f"no event acknowledged: {next(iter(unresolved.values()))}")
        summary.rejected += not_acknowledged
        errors.sort(key=lambda pair: pair[0])
        summary.errors.extend(message for _, message in errors[:limits.MAX_SUMMARY_ERRORS])
        return summary

    async def _resolve_many(self, user_ids: set[str], seconds: float) -> tuple[dict[str, str], dict[str, str]]:
        """Targets of the ids (cached or asked, a bounded number at once) and the ids that could not be
        resolved with the reason."""
        targets: dict[str, str] = {}
        unresolved: dict[str, str] = {}
        ask: list[str] = []
        for user_id in user_ids:
            cached = self.aliases.get(user_id)
            if cached is None:
                ask.append(user_id)
            elif cached:
                targets[user_id] = cached
        gate = asyncio.Semaphore(limits.BATCH_RESOLVE_CONCURRENCY)

        async def one(user_id: str) -> None:
            async with gate:
                try:
                    target = await self._ask_alias(user_id, seconds)
                except grpc.aio.AioRpcError as err:
                    unresolved[user_id] = (f"profile shard {self.shard_for(user_id)} {err.code().name}: "
                                           f"{err.details()} (alias lookup)")
                except TimeoutError:
                    unresolved[user_id] = f"profile shard {self.shard_for(user_id)} alias lookup did not answer in time"
                else:
                    if target:
                        targets[user_id] = target

        await asyncio.gather(*(one(u) for u in ask))
        return targets, unresolved

    async def get_profile_or_raise(self, user_id: str, seconds: float = limits.PROFILE_CALL_TIMEOUT_S,
                                   min_seq: int = 0) -> common_pb2.Profile:
        profile = await self.get_profile(user_id, seconds, min_seq)
        if profile is None:
            raise NotFound(f"no profile for user {user_id!r}")
        return profile

    async def set_consent(self, request: profile_pb2.SetConsentRequest,
                          seconds: float = limits.PROFILE_CALL_TIMEOUT_S) -> common_pb2.Profile:
        target = await self.resolve(request.user_id, seconds)
        if target != request.user_id:
            request = profile_pb2.SetConsentRequest(user_id=target, consent=request.consent)
        return await self._stub(target).SetConsent(request, timeout=seconds)

    async def export_profile(self, request: profile_pb2.ExportProfileRequest,
                             seconds: float = limits.PROFILE_CALL_TIMEOUT_S) -> profile_pb2.ExportProfileResponse:
        target = await self.resolve(request.user_id, seconds)
        return await self._stub(target).ExportProfile(profile_pb2.ExportProfileRequest(user_id=target),
                                                      timeout=seconds)

    async def delete_profile(self, request: profile_pb2.DeleteProfileRequest,
                             seconds: float = limits.PROFILE_CALL_TIMEOUT_S) -> profile_pb2.DeleteProfileResponse:
        """Erase the profile holding `user_id`'s data, and its aliases on every other shard."""
        if len(self.stubs) == 1:
            return await self.stubs[0].DeleteProfile(request, timeout=seconds)
        user_id = request.user_id
        target = await self.resolve(user_id, seconds)
        aliases: set[str] = {user_id} - {target}
        try:
            profile = await self._stub(target).GetProfile(profile_pb2.GetProfileRequest(user_id=target),
                                                          timeout=seconds)
            aliases.update(profile.aliases)
        except grpc.aio.AioRpcError as err:
            if not _not_found(err):
                raise
        reply = await self._stub(target).DeleteProfile(profile_pb2.DeleteProfileRequest(user_id=target),
                                                       timeout=seconds)
        home = self.shard_for(target)
        remote = sorted(a for a in aliases if self.shard_for(a) != home)
        results = await asyncio.gather(*(
            self._stub(a).DeleteProfile(profile_pb2.DeleteProfileRequest(user_id=a), timeout=seconds)
            for a in remote))
        self.aliases.drop(target, *aliases)
        answer = profile_pb2.DeleteProfileResponse()
        answer.CopyFrom(reply)
        answer.deleted = reply.deleted or any(r.deleted for r in results)
        answer.aliases_deleted = reply.aliases_deleted + len(remote)
        return answer

    async def identify(self, request: profile_pb2.IdentifyRequest,
                       seconds: float = limits.PROFILE_CALL_TIMEOUT_S) -> common_pb2.Profile:
        """Merge the anonymous profile into the customer's, across shards when they differ."""
        anon, customer = request.anonymous_id, request.customer_id
        if len(self.stubs) == 1:
            return await self.stubs[0].Identify(request, timeout=seconds)
        if not anon or not customer or anon == customer:
            # Nothing to move between shards: the customer's shard validates and answers.
            return await self._stub(customer or anon).Identify(request, timeout=seconds)
        anon_shard, customer_shard = self.shard_for(anon), self.shard_for(customer)
        self.aliases.drop(anon)
        if anon_shard == customer_shard:
            profile = await self.stubs[customer_shard].Identify(request, timeout=seconds)
            self.aliases.put(anon, customer)
            return profile
        CROSS_SHARD_IDENTIFY.inc()
        return await self._identify_across(request, anon_shard, customer_shard, seconds)

    async def _identify_across(self, request: profile_pb2.IdentifyRequest, anon_shard: int,
                               customer_shard: int, seconds: float) -> common_pb2.Profile:
        anon, customer = request.anonymous_id, request.customer_id
        source, dest = self.stubs[anon_shard], self.stubs[customer_shard]
        previous = await self._ask_alias(anon, seconds)
        if previous and previous != customer:
            # An anonymous id belongs to one customer; erase it first to reassign it.
            raise FailedPrecondition(f"anonymous id {anon!r} is already identified as another customer")
        anon_profile: common_pb2.Profile | None = None
        events: list[common_pb2.Event] = []
        if not previous:
            try:
                anon_profile = await source.GetProfile(profile_pb2.GetProfileRequest(user_id=anon),
                                                       timeout=seconds)
            except grpc.aio.AioRpcError as err:
                if not _not_found(err):
                    raise
            if anon_profile is not None and anon_profile.user_id not in ("", anon):
                anon_profile = None  # the shard followed a local alias: nothing of anon's own to move
            if anon_profile is not None:
                events = await self._user_events(source, anon, seconds)
        # 1. Import into the customer's shard (creates the customer profile if needed).
        merged = common_pb2.Profile()
        if anon_profile is not None:
            merged.CopyFrom(anon_profile)
        # RFM is derived by the shard from the merged counters (and -1 "never bought" is not importable).
        merged.ClearField("rfm")
        merged.user_id = customer
        merged.customer_id = customer
        merged.registered = True
        merged.traits.update(request.traits)
        if anon not in merged.aliases:
            merged.aliases.append(anon)
        for event in events:
            event.user_id = customer
        imported = await dest.ImportProfile(profile_pb2.ImportProfileRequest(profile=merged, events=events),
                                            timeout=seconds)
        await dest.PutAlias(profile_pb2.PutAliasRequest(alias_id=anon, target_id=customer), timeout=seconds)
        # Ids merged earlier into the anonymous profile now point at the customer, on the customer's
        # shard and on their own (erasing the anonymous profile below drops A's copies).
        for alias in (anon_profile.aliases if anon_profile is not None else ()):
            if alias in (anon, customer):
                continue
            request_alias = profile_pb2.PutAliasRequest(alias_id=alias, target_id=customer)
            await dest.PutAlias(request_alias, timeout=seconds)
            if self.shard_for(alias) != customer_shard:
                await self._stub(alias).PutAlias(request_alias, timeout=seconds)
            self.aliases.drop(alias)
        # 2. The anonymous shard keeps only an alias.
        if anon_profile is not None:
            await source.DeleteProfile(profile_pb2.DeleteProfileRequest(user_id=anon), timeout=seconds)
        await source.PutAlias(profile_pb2.PutAliasRequest(alias_id=anon, target_id=customer), timeout=seconds)
        self.aliases.put(anon, customer)
        log.info("identified %s as %s across shards %d -> %d", anon, customer, anon_shard, customer_shard,
                 extra={"fields": {"events_moved": len(events)}})
        try:
            return await dest.GetProfile(profile_pb2.GetProfileRequest(user_id=customer), timeout=seconds)
        except grpc.aio.AioRpcError:
            return imported

    async def _user_events(self, stub: Any, user_id: str, seconds: float) -> list[common_pb2.Event]:
        try:
            call = stub.GetUserEvents(
                profile_pb2.GetUserEventsRequest(user_id=user_id, limit=limits.MAX_MOVED_EVENTS), timeout=seconds)
            return [event async for event in call]
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.warning("profile shard does not implement GetUserEvents: events of %s are not moved", user_id)
                return []
            raise
