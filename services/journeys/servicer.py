"""JourneyService over gRPC: protobuf in, a call on the JourneyEngine, protobuf out."""

from __future__ import annotations

import grpc

from services.journeys.engine import JourneyEngine
from vitrine.v1 import journey_pb2, journey_pb2_grpc


class JourneyServicer(journey_pb2_grpc.JourneyServiceServicer):
    def __init__(self, engine: JourneyEngine) -> None:
        self.engine = engine

    async def PutJourney(self, request: journey_pb2.PutJourneyRequest, context: grpc.aio.ServicerContext
                         ) -> journey_pb2.Journey:
        return self.engine.put_journey(request.journey)

    async def GetJourney(self, request: journey_pb2.GetJourneyRequest, context: grpc.aio.ServicerContext
                         ) -> journey_pb2.Journey:
        return self.engine.get_journey(request.journey_id)

    async def ListJourneys(self, request: journey_pb2.ListJourneysRequest, context: grpc.aio.ServicerContext
                           ) -> journey_pb2.ListJourneysResponse:
        return journey_pb2.ListJourneysResponse(journeys=self.engine.list_journeys())

    async def DeleteJourney(self, request: journey_pb2.DeleteJourneyRequest, context: grpc.aio.ServicerContext
                            ) -> journey_pb2.DeleteJourneyResponse:
        return journey_pb2.DeleteJourneyResponse(deleted=self.engine.delete_journey(request.journey_id))

    async def PullMessages(self, request: journey_pb2.PullMessagesRequest, context: grpc.aio.ServicerContext
                           ) -> journey_pb2.PullMessagesResponse:
        messages = await self.engine.pull(request.max, request.wait_ms)
        return journey_pb2.PullMessagesResponse(messages=messages)

    async def AckMessages(self, request: journey_pb2.AckMessagesRequest, context: grpc.aio.ServicerContext
                          ) -> journey_pb2.AckMessagesResponse:
        return journey_pb2.AckMessagesResponse(acked=self.engine.ack(request.message_ids))

    async def GetJourneyStats(self, request: journey_pb2.GetJourneyStatsRequest,
                              context: grpc.aio.ServicerContext) -> journey_pb2.JourneyStats:
        return self.engine.stats(request.journey_id)

    async def ListUserMessages(self, request: journey_pb2.ListUserMessagesRequest,
                               context: grpc.aio.ServicerContext) -> journey_pb2.ListUserMessagesResponse:
        return journey_pb2.ListUserMessagesResponse(messages=self.engine.user_messages(request.user_id,
                                                                                       request.limit))
