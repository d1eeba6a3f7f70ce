"""Helpers for tests that start real services in-process on port 0."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from services.common.server import RunningServer
from vitrine.serving import serving as serving  # re-exported: the tests import it from here
from vitrine.v1 import profile_pb2, profile_pb2_grpc


@contextlib.asynccontextmanager
async def channel_to(running: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(running.address) as channel:
        yield channel


async def assert_status(awaitable: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await a call and check it failed with `code`; returns the error for further checks."""
    try:
        await awaitable  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
        return err
    raise AssertionError(f"expected {code.name}, the call succeeded")


def known_shopper(profile_address: str) -> str:
    """A shopper of the loaded demo store with recent views and consent to personalization (the
    suite tests personalize for one)."""
    with grpc.insecure_channel(profile_address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        for profile in stub.ScanProfiles(profile_pb2.ScanProfilesRequest(limit=60), timeout=10):
            if profile.recently_viewed and profile.consent.personalization:
                return str(profile.user_id)
    raise AssertionError("the demo store has no shopper with views and consent")
