"""ProfileService over gRPC: protobuf in, a call on the ProfileEngine, protobuf out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc

from services.profile.engine import ProfileEngine, StreamSummary
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc


def track_summary(summary: StreamSummary) -> profile_pb2.TrackSummary:
    return profile_pb2.TrackSummary(accepted=summary.accepted, duplicates=summary.duplicates,
                                    rejected=summary.rejected, errors=summary.errors)


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    def __init__(self, engine: ProfileEngine) -> None:
        self.engine = engine

    async def Track(self, request: profile_pb2.TrackRequest, context: grpc.aio.ServicerContext
                    ) -> profile_pb2.TrackResponse:
        result = await self.engine.track(request.event)
        return profile_pb2.TrackResponse(applied=result.applied, user_id=result.user_id, seq=result.seq)

    async def TrackStream(self, request_iterator: AsyncIterator[common_pb2.Event],
                          context: grpc.aio.ServicerContext) -> profile_pb2.TrackSummary:
        return track_summary(await self.engine.track_stream(request_iterator))

    async def TrackBatch(self, request: profile_pb2.TrackBatchRequest, context: grpc.aio.ServicerContext
                         ) -> profile_pb2.TrackSummary:
        return track_summary(await self.engine.track_batch(request.events))

    async def FollowEvents(self, request: profile_pb2.FollowEventsRequest, context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[profile_pb2.LoggedEvent]:
        items = self.engine.follow_events(request.from_seq, request.max_batch)
        await context.send_initial_metadata(())  # the stream is open: a follower may reset its backoff
        async for item in items:
            yield item

    async def FollowEventBatches(self, request: profile_pb2.FollowEventsRequest,
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[profile_pb2.LoggedEventBatch]:
        batches = self.engine.follow_event_batches(request.from_seq, request.max_batch)
        await context.send_initial_metadata(())
        async for items in batches:
            yield profile_pb2.LoggedEventBatch(items=items)

    async def GetProfile(self, request: profile_pb2.GetProfileRequest, context: grpc.aio.ServicerContext
                         ) -> common_pb2.Profile:
        return self.engine.get_profile(request.user_id)

    async def Identify(self, request: profile_pb2.IdentifyRequest, context: grpc.aio.ServicerContext
                       ) -> common_pb2.Profile:
        return await self.engine.identify(request.anonymous_id, request.customer_id, dict(request.traits))

    async def SetConsent(self, request: profile_pb2.SetConsentRequest, context: grpc.aio.ServicerContext
                         ) -> common_pb2.Profile:
        return await self.engine.set_consent(request.user_id, request.consent)

    async def DeleteProfile(self, request: profile_pb2.DeleteProfileRequest, context: grpc.aio.ServicerContext
                            ) -> profile_pb2.DeleteProfileResponse:
        result = await self.engine.delete(request.user_id)
        return profile_pb2.DeleteProfileResponse(deleted=result.deleted, events_deleted=result.events_deleted,
                                                 aliases_deleted=result.aliases_deleted)

    async def ExportProfile(self, request: profile_pb2.ExportProfileRequest, context: grpc.aio.ServicerContext
                            ) -> profile_pb2.ExportProfileResponse:
        document = await self.engine.export(request.user_id)
        return profile_pb2.ExportProfileResponse(json=json.dumps(document, sort_keys=True))

    async def ScanProfiles(self, request: profile_pb2.ScanProfilesRequest, context: grpc.aio.ServicerContext
                           ) -> AsyncIterator[common_pb2.Profile]:
        async for profile in self.engine.scan_profiles(request.start_after, request.limit):
            yield profile

    async def ScanEvents(self, request: profile_pb2.ScanEventsRequest, context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[common_pb2.Event]:
        async for event in self.engine.scan_events(request.since_ms, request.until_ms, list(request.types),
                                                   request.limit):
            yield event

    async def ImportProfile(self, request: profile_pb2.ImportProfileRequest, context: grpc.aio.ServicerContext
                            ) -> common_pb2.Profile:
        return await self.engine.import_profile(request.profile, list(request.events))

    async def PutAlias(self, request: profile_pb2.PutAliasRequest, context: grpc.aio.ServicerContext
                       ) -> profile_pb2.PutAliasResponse:
        created = await self.engine.put_alias(request.alias_id, request.target_id)
        return profile_pb2.PutAliasResponse(created=created)

    async def ResolveAlias(self, request: profile_pb2.ResolveAliasRequest, context: grpc.aio.ServicerContext
                           ) -> profile_pb2.ResolveAliasResponse:
        return profile_pb2.ResolveAliasResponse(target_id=self.engine.resolve_alias(request.user_id))

    async def GetUserEvents(self, request: profile_pb2.GetUserEventsRequest, context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[common_pb2.Event]:
        for event in await self.engine.own_events(request.user_id, request.limit):
            yield event
