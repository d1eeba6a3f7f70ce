"""A full disk and a full LMDB map under the profile service: writes answer RESOURCE_EXHAUSTED
with a message, reads keep working, nothing acknowledged is lost, and writes resume once there
is space again. Before the fix a full filesystem answered INTERNAL (lmdb.DiskError, ENOSPC).

The filesystem is a small tmpfs mounted for the test (needs root: skipped otherwise)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from services.profile.app import ProfileService
from services.profile.config import ProfileConfig
from tests.support import channel_to, serving
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

USERS = 40
MAX_EVENTS = 60_000  # bound: a 3 MiB disk fills after a few thousand


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def event(i: int) -> common_pb2.Event:
    return common_pb2.Event(event_id=f"e{i}", user_id=f"u{i % USERS}", type=common_pb2.PAGE_VIEW,
                            category="c" * 200)


@contextlib.asynccontextmanager
async def profile_stub(data_dir: Path, **overrides: object) -> AsyncIterator[profile_pb2_grpc.ProfileServiceStub]:
    config = ProfileConfig(**{"port": 0, "data_dir": str(data_dir), "purge_interval_seconds": 0,  # type: ignore[arg-type]
                              **overrides})
    service = ProfileService(config)
    async with serving(service, config) as running, channel_to(running) as channel:
        yield profile_pb2_grpc.ProfileServiceStub(channel)


async def fill(stub: profile_pb2_grpc.ProfileServiceStub, start: int) -> tuple[int, grpc.aio.AioRpcError]:
    """Track new events until one fails; returns how many were acknowledged and the error."""
    for i in range(start, start + MAX_EVENTS):
        try:
            await stub.Track(profile_pb2.TrackRequest(event=event(i)), timeout=10)
        except grpc.aio.AioRpcError as err:
            return i - start, err
    raise AssertionError(f"{MAX_EVENTS} events fit; the store never filled")


async def event_counts(stub: profile_pb2_grpc.ProfileServiceStub) -> int:
    total = 0
    for u in range(USERS):
        profile = await stub.GetProfile(profile_pb2.GetProfileRequest(user_id=f"u{u}"), timeout=10)
        total += profile.event_count
    return total


@pytest.mark.parametrize("writer_process", [True, False], ids=["writer-process", "in-process"])
async def test_full_disk_is_resource_exhausted_and_recovers(tmp_path: Path, writer_process: bool) -> None:
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        async with profile_stub(disk, map_size_mb=256, writer_process=writer_process) as stub:
            acked, err = await fill(stub, 0)
            assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
            assert "disk is full" in (err.details() or "")
            assert acked > 0
            assert await event_counts(stub) == acked  # reads work; every acknowledged event is there
            resize(disk, "64m")
            more, _ = await fill_some(stub, acked, 200)
            assert more == 200
        async with profile_stub(disk, map_size_mb=256, writer_process=writer_process) as stub:
            assert await event_counts(stub) == acked + 200  # and all of it survives a restart


async def fill_some(stub: profile_pb2_grpc.ProfileServiceStub, start: int, n: int) -> tuple[int, None]:
    for i in range(start, start + n):
        await stub.Track(profile_pb2.TrackRequest(event=event(i)), timeout=10)
    return n, None


async def test_full_map_is_resource_exhausted_and_recovers_with_a_larger_map(tmp_path: Path) -> None:
    async with profile_stub(tmp_path, map_size_mb=2, writer_process=False) as stub:
        acked, err = await fill(stub, 0)
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        assert "map-size-mb" in (err.details() or "")
        assert await event_counts(stub) == acked
    async with profile_stub(tmp_path, map_size_mb=16, writer_process=False) as stub:
        assert await event_counts(stub) == acked
        await fill_some(stub, acked, 100)
        assert await event_counts(stub) == acked + 100
