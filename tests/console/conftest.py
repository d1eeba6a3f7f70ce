"""Fixtures: the real backends with the demo store (once per test session), and the console app
in Starlette's TestClient, logged in or not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from starlette.testclient import TestClient

from services.console.app import build_app
from tests.console.suite import Backends, LoopThread, start_backends
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

PASSWORD = "s3cret-pass"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def backends(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    suite = loop_thread.run(start_backends(Path(tmp_path_factory.mktemp("console-suite"))))
    yield suite
    loop_thread.run(suite.close(), timeout=60)


def scan_profiles(loop_thread: LoopThread, backends: Backends, limit: int = 500) -> list[common_pb2.Profile]:
    async def scan() -> list[common_pb2.Profile]:
        async with grpc.aio.insecure_channel(backends.profile.address) as channel:
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            return [p async for p in stub.ScanProfiles(profile_pb2.ScanProfilesRequest(limit=limit), timeout=30)]

    return loop_thread.run(scan(), timeout=60)


@pytest.fixture(scope="session")
def demo_profiles(loop_thread: LoopThread, backends: Backends) -> list[common_pb2.Profile]:
    return scan_profiles(loop_thread, backends)


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def log_in(client: TestClient, operator: str = "ana") -> str:
    """Log in through the form; returns the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    reply = client.post("/login", data={"operator": operator, "password": PASSWORD, "csrf_token": token},
                        follow_redirects=False)
    assert reply.status_code == 303, reply.text
    return csrf_of(client.get("/customers").text)


@pytest.fixture
def app_client(backends: Backends, tmp_path: Path) -> Iterator[TestClient]:
    app = build_app(backends.console_config(data_dir=str(tmp_path)))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def client(app_client: TestClient) -> TestClient:
    app_client.csrf = log_in(app_client)  # type: ignore[attr-defined]
    return app_client
