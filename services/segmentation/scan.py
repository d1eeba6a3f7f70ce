"""Stream every stored profile from the profile service shards (ScanProfiles), for EstimateSize."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc

from services.common.channel import channel_for
from services.common.config import ServerConfig
from services.common.errors import DeadlineExceeded, Unavailable
from vitrine.v1 import profile_pb2

_PROFILE_SERVICE = profile_pb2.DESCRIPTOR.services_by_name["ProfileService"]
SCAN_METHOD = f"/{_PROFILE_SERVICE.full_name}/{_PROFILE_SERVICE.methods_by_name['ScanProfiles'].name}"


class ProfileScanner:
    """One long-lived channel per profile shard; `sources()` gives one profile stream per shard."""

    def __init__(self, addresses: Sequence[str], config: ServerConfig) -> None:
        if not addresses:
            raise ValueError("profile_addresses is empty; EstimateSize needs at least one profile shard")
        self.addresses = tuple(addresses)
        self._channels = [channel_for(a, config) for a in self.addresses]
        # ScanProfiles answered as raw bytes: ColumnExtractor's wire kernel reads them as they
        # are, without decoding a profile.
        self._scans: list[grpc.aio.UnaryStreamMultiCallable] = [c.unary_stream(SCAN_METHOD,
                                      request_serializer=profile_pb2.ScanProfilesRequest.SerializeToString,
                                      response_deserializer=None) for c in self._channels]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def sources(self, timeout: float) -> list[AsyncIterator[bytes]]:
        """One stream of serialized Profile messages per shard."""
        return [self._scan(address, scan, timeout) for address, scan in zip(self.addresses, self._scans,
                                                                             strict=True)]

    async def _scan(self, address: str, scan: grpc.aio.UnaryStreamMultiCallable,
                    deadline_s: float) -> AsyncIterator[bytes]:
        call = scan(profile_pb2.ScanProfilesRequest(), timeout=deadline_s)
        try:
            async for profile in call:
                yield profile
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(f"scanning profiles on {address} took longer than {deadline_s:.0f} s; "
                                       "raise --scan-timeout-seconds or retry") from None
            raise Unavailable(f"profile shard {address} failed the scan ({err.code().name}: {err.details()}); "
                              "no estimate without every shard") from None
        finally:
            call.cancel()
