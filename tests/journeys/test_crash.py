"""Kill -9 under load: the journeys service (or the profile service under its feed) is killed with
SIGKILL while carts are tracked and their timers fall due, restarted on the same data directory,
and every shopper whose add-to-cart was acknowledged gets its message at least once, under one
stable message id (nothing lost, nothing entered twice)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.journeys.helpers import JK, journey
from vitrine.health import wait_serving
from vitrine.ports import free_ports
from vitrine.v1 import common_pb2, journey_pb2, journey_pb2_grpc, profile_pb2, profile_pb2_grpc, recommend_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
ET = common_pb2.EventType
USERS_PER_ROUND = 15
DELAY_MS = 300
DEADLINE_SECONDS = 90.0


class Process:
    def __init__(self, module: str, port: int, args: list[str], log: Path) -> None:
        self.module, self.port, self.args, self.log = module, port, args, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--port", str(self.port), "--log-level", "INFO", *self.args],
                cwd=ROOT, stdout=log, stderr=log)
        wait_serving(self.address, time.monotonic() + 120, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.asynccontextmanager
async def suite(tmp_path: Path) -> AsyncIterator[tuple[Process, Process, Process]]:
    await asyncio.to_thread(tmp_path.mkdir, parents=True, exist_ok=True)
    p_port, r_port, j_port = free_ports(3)
    profile = Process("services.profile", p_port, ["--data-dir", str(tmp_path / "p"), "--purge-interval-seconds",
                                                   "0", "--no-writer-process"], tmp_path / "profile.log")
    recommendation = Process("services.recommendation", r_port, [
        "--data-dir", str(tmp_path / "r"), "--profile-addresses", f"127.0.0.1:{p_port}"], tmp_path / "rec.log")
    journeys = Process("services.journeys", j_port, [
        "--data-dir", str(tmp_path / "j"), "--profile-addresses", f"127.0.0.1:{p_port}",
        "--recommendation-address", f"127.0.0.1:{r_port}", "--segmentation-address", "",
        "--quiet-start-hour", "0", "--quiet-end-hour", "0", "--frequency-cap", "0",
        "--visibility-timeout-seconds", "2", "--send-retry-seconds", "0.5"], tmp_path / "journeys.log")
    try:
        profile.start()
        recommendation.start()
        async with grpc.aio.insecure_channel(recommendation.address) as channel:
            products = [common_pb2.Product(product_id=f"p{i}", title=f"P{i}", category="c", price=10.0 + i,
                                           stock=100) for i in range(10)]
            await recommend_pb2_grpc.RecommendServiceStub(channel).UpsertProducts(iter(products), timeout=30)
        journeys.start()
        async with grpc.aio.insecure_channel(journeys.address) as channel:
            await journey_pb2_grpc.JourneyServiceStub(channel).PutJourney(journey_pb2.PutJourneyRequest(
                journey=journey(JK.ABANDONED_CART, "cart", delay_ms=DELAY_MS)), timeout=10)
        yield profile, recommendation, journeys
    finally:
        for process in (journeys, recommendation, profile):
            process.stop()


async def shoppers(profiles: profile_pb2_grpc.ProfileServiceStub, users: list[str], acked: set[str],
                   rng: random.Random) -> None:
    """Register each shopper with consent and track one add-to-cart; retried while the profile
    service is down; only acknowledged carts are expected to produce a message."""
    for user in users:
        while True:
            try:
                await profiles.Identify(profile_pb2.IdentifyRequest(anonymous_id=f"a-{user}", customer_id=user),
                                        timeout=2, wait_for_ready=True)
                await profiles.SetConsent(profile_pb2.SetConsentRequest(
                    user_id=user, consent=common_pb2.Consent(marketing=True)), timeout=2, wait_for_ready=True)
                await profiles.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
                    event_id=f"cart-{user}", user_id=user, session_id="s", type=ET.ADD_TO_CART,
                    product_id=f"p{rng.randrange(10)}", timestamp_ms=int(time.time() * 1000))),
                    timeout=2, wait_for_ready=True)
                acked.add(user)
                break
            except grpc.aio.AioRpcError:
                continue   # the call waited for the restarted server (wait_for_ready) and timed out


async def puller(address: str, received: dict[str, set[str]], stop: asyncio.Event) -> None:
    """Pull and ack until told to stop, across restarts of the journeys service."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = journey_pb2_grpc.JourneyServiceStub(channel)
        while not stop.is_set():
            try:
                response = await stub.PullMessages(journey_pb2.PullMessagesRequest(max=100, wait_ms=300),
                                                   timeout=2, wait_for_ready=True)
                for message in response.messages:
                    received[message.user_id].add(message.message_id)
                if response.messages:
                    await stub.AckMessages(journey_pb2.AckMessagesRequest(
                        message_ids=[m.message_id for m in response.messages]), timeout=2)
            except grpc.aio.AioRpcError:
                continue


async def run_rounds(tmp_path: Path, rounds: int, victim: str) -> None:
    rng = random.Random(7)
    async with suite(tmp_path) as (profile, _recommendation, journeys), \
            grpc.aio.insecure_channel(profile.address) as p_channel:
        profiles = profile_pb2_grpc.ProfileServiceStub(p_channel)
        acked: set[str] = set()
        received: dict[str, set[str]] = collections.defaultdict(set)
        stop = asyncio.Event()
        pulling = asyncio.create_task(puller(journeys.address, received, stop))
        target = journeys if victim == "journeys" else profile
        for r in range(rounds):
            users = [f"r{r}-u{i}" for i in range(USERS_PER_ROUND)]
            tracking = asyncio.create_task(shoppers(profiles, users, acked, rng))
            # Kill while carts stream in and earlier timers fall due.
            await asyncio.wait({tracking}, timeout=rng.uniform(0.05, 0.6))
            await asyncio.to_thread(target.kill)
            await asyncio.to_thread(target.start)
            await tracking
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not acked <= set(received) and time.monotonic() < deadline:
            await asyncio.wait({pulling}, timeout=0.5)
        stop.set()
        await pulling
        missing = acked - set(received)
        assert not missing, (f"{len(missing)} of {len(acked)} acknowledged carts got no message, "
                             f"e.g. {sorted(missing)[:3]}; logs in {tmp_path}")
        twice = {u: ids for u, ids in received.items() if len(ids) > 1}
        assert not twice, f"shoppers with more than one message id: {twice}"
        assert len(acked) == rounds * USERS_PER_ROUND


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["journeys", "profile"])
async def test_kill_9_loses_no_due_message(tmp_path: Path, victim: str) -> None:
    await run_rounds(tmp_path, 10, victim)


async def test_kill_9_once(tmp_path: Path) -> None:
    """The quick version in the default set: one kill of each."""
    await run_rounds(tmp_path / "j", 1, "journeys")
    await run_rounds(tmp_path / "p", 1, "profile")

