"""ProfileService in scale-out mode: the same RPCs, writes and feeds on the JetStream log."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.profile.scaleout import ScaleOutProfile
from services.profile.servicer import ProfileServicer, track_summary
from vitrine.v1 import common_pb2, profile_pb2


class ScaleOutServicer(ProfileServicer):
    """Overrides what the log changes; every other read is the shard's LMDB, as embedded."""

    def __init__(self, shard: ScaleOutProfile) -> None:
        super().__init__(shard.engine)
        self.shard = shard

    async def Track(self, request: profile_pb2.TrackRequest, context: grpc.aio.ServicerContext
                    ) -> profile_pb2.TrackResponse:
        return await self.shard.track(request.event)

    async def TrackStream(self, request_iterator: AsyncIterator[common_pb2.Event],
                          context: grpc.aio.ServicerContext) -> profile_pb2.TrackSummary:
        return track_summary(await self.shard.track_stream(request_iterator))

    async def TrackBatch(self, request: profile_pb2.TrackBatchRequest, context: grpc.aio.ServicerContext
                         ) -> profile_pb2.TrackSummary:
        return track_summary(await self.shard.track_batch(request.events))

    async def FollowEvents(self, request: profile_pb2.FollowEventsRequest, context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[profile_pb2.LoggedEvent]:
        batches = self.shard.follow_event_batches(request.from_seq)
        await context.send_initial_metadata(())
        async for items in batches:
            for item in items:
                yield item

    async def FollowEventBatches(self, request: profile_pb2.FollowEventsRequest,
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[profile_pb2.LoggedEventBatch]:
        batches = self.shard.follow_event_batches(request.from_seq)
        await context.send_initial_metadata(())
        async for items in batches:
            yield profile_pb2.LoggedEventBatch(items=items)

    async def GetProfile(self, request: profile_pb2.GetProfileRequest, context: grpc.aio.ServicerContext
                         ) -> common_pb2.Profile:
        return await self.shard.get_profile(request.user_id, request.min_seq)

    async def DeleteProfile(self, request: profile_pb2.DeleteProfileRequest, context: grpc.aio.ServicerContext
                            ) -> profile_pb2.DeleteProfileResponse:
        result = await self.shard.delete(request.user_id)
        return profile_pb2.DeleteProfileResponse(deleted=result.deleted, events_deleted=result.events_deleted,
                                                 aliases_deleted=result.aliases_deleted)

    async def Identify(self, request: profile_pb2.IdentifyRequest, context: grpc.aio.ServicerContext
                       ) -> common_pb2.Profile:
        self.shard.refuse("Identify")

    async def SetConsent(self, request: profile_pb2.SetConsentRequest, context: grpc.aio.ServicerContext
                         ) -> common_pb2.Profile:
        self.shard.refuse("SetConsent")

    async def ImportProfile(self, request: profile_pb2.ImportProfileRequest, context: grpc.aio.ServicerContext
                            ) -> common_pb2.Profile:
        self.shard.refuse("ImportProfile")

    async def PutAlias(self, request: profile_pb2.PutAliasRequest, context: grpc.aio.ServicerContext
                       ) -> profile_pb2.PutAliasResponse:
        self.shard.refuse("PutAlias")
