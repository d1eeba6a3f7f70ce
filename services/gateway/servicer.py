"""PersonalizationService servicer: protobuf in, a call on the composer or router, protobuf out.

Backend errors of forwarded profile operations reach the caller with their own status
code and message (a Track the profile shard refused was not acknowledged).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from services.gateway.composer import Composer
from services.gateway.router import ProfileRouter
from vitrine.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, profile_pb2

T = TypeVar("T")


async def _forward(call: Awaitable[T], context: grpc.aio.ServicerContext) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        await context.abort(err.code(), err.details() or err.code().name)
    except TimeoutError:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "profile shard did not answer in time")
    raise AssertionError("unreachable")  # pragma: no cover - abort raises


class PersonalizationServicer(gateway_pb2_grpc.PersonalizationServiceServicer):
    """Bound to its composer and router once the service has opened its channels."""

    composer: Composer
    router: ProfileRouter

    def bind(self, composer: Composer, router: ProfileRouter) -> None:
        self.composer = composer
        self.router = router

    async def Track(self, request: profile_pb2.TrackRequest,
                    context: grpc.aio.ServicerContext) -> profile_pb2.TrackResponse:
        return await _forward(self.composer.track(request), context)

    async def TrackBatch(self, request: profile_pb2.TrackBatchRequest,
                         context: grpc.aio.ServicerContext) -> profile_pb2.TrackSummary:
        return await _forward(self.composer.track_batch(request), context)

    async def Personalize(self, request: gateway_pb2.PersonalizeRequest,
                          context: grpc.aio.ServicerContext) -> gateway_pb2.PersonalizeResponse:
        return await self.composer.personalize(request)

    async def Identify(self, request: profile_pb2.IdentifyRequest,
                       context: grpc.aio.ServicerContext) -> common_pb2.Profile:
        return await _forward(self.router.identify(request), context)

    async def GetProfile(self, request: profile_pb2.GetProfileRequest,
                         context: grpc.aio.ServicerContext) -> common_pb2.Profile:
        return await _forward(self.router.get_profile_or_raise(request.user_id, min_seq=request.min_seq), context)

    async def SetConsent(self, request: profile_pb2.SetConsentRequest,
                         context: grpc.aio.ServicerContext) -> common_pb2.Profile:
        return await _forward(self.router.set_consent(request), context)

    async def DeleteProfile(self, request: profile_pb2.DeleteProfileRequest,
                            context: grpc.aio.ServicerContext) -> profile_pb2.DeleteProfileResponse:
        return await _forward(self.router.delete_profile(request), context)

    async def ExportProfile(self, request: profile_pb2.ExportProfileRequest,
                            context: grpc.aio.ServicerContext) -> profile_pb2.ExportProfileResponse:
        return await _forward(self.router.export_profile(request), context)
