"""A real profile server in-process on port 0, on a temporary data directory."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.server import RunningServer
from services.profile.app import ProfileService
from services.profile.config import ProfileConfig
from services.profile.engine import ProfileEngine
from tests.support import channel_to, serving
from vitrine.v1 import profile_pb2_grpc


@dataclasses.dataclass
class Profiles:
    stub: profile_pb2_grpc.ProfileServiceStub
    service: ProfileService
    running: RunningServer
    data_dir: Path

    @property
    def engine(self) -> ProfileEngine:
        return self.service.engine


def make_service(data_dir: Path, **overrides: object) -> ProfileService:
    values = {"port": 0, "data_dir": str(data_dir), "purge_interval_seconds": 0.0, **overrides}
    return ProfileService(ProfileConfig(**values))  # type: ignore[arg-type]


# Every service test runs against both write paths: the writer process (the default) and
# the writer thread in the service process (--no-writer-process).
@pytest.fixture(params=[True, False], ids=["writer-process", "in-process"])
async def profiles(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Profiles]:
    service = make_service(tmp_path, writer_process=request.param)
    async with serving(service, service.config) as running, channel_to(running) as channel:
        yield Profiles(profile_pb2_grpc.ProfileServiceStub(channel), service, running, tmp_path)
