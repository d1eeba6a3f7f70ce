"""The writer process: it owns the write transactions, dies with the service, is restarted
after a crash without losing or doubling acknowledged events, and keeps writes in order."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.profile import fold
from services.profile.writer import WriterProcess
from tests.profile.conftest import Profiles, make_service
from tests.profile.helpers import ET, ev
from tests.profile.restarts import serving_process
from tests.support import assert_status, channel_to, serving
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

pb = profile_pb2


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait (without polling) until `pid` has exited: its pidfd turns readable when it does."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable) or not alive(pid)
    finally:
        os.close(fd)


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


@pytest.fixture
async def profiles(tmp_path: Path) -> AsyncIterator[Profiles]:
    """A service with the writer process (the default); overrides the two-mode fixture."""
    service = make_service(tmp_path)
    async with serving(service, service.config) as running, channel_to(running) as channel:
        yield Profiles(profile_pb2_grpc.ProfileServiceStub(channel), service, running, tmp_path)


async def test_writes_run_in_the_writer_process(profiles: Profiles) -> None:
    writer = profiles.engine.writer
    assert writer is not None
    assert writer.pid is not None and writer.pid != os.getpid() and alive(writer.pid)
    summary = await profiles.stub.TrackStream(iter([ev(ET.PAGE_VIEW, user=f"w{i}") for i in range(50)]), timeout=10)
    assert summary.accepted == 50
    assert profiles.engine.batches >= 1


async def test_a_killed_writer_is_restarted_and_acknowledged_events_stay(profiles: Profiles) -> None:
    writer = profiles.engine.writer
    assert writer is not None
    before = [ev(ET.PRODUCT_VIEW, user="k1", event_id=f"before-{i}") for i in range(20)]
    assert (await profiles.stub.TrackStream(iter(before), timeout=10)).accepted == 20
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_gone(first)
    # The next write starts a new writer; nothing acknowledged is lost, nothing is applied twice.
    after = [ev(ET.PRODUCT_VIEW, user="k1", event_id=f"after-{i}") for i in range(20)]
    summary = await profiles.stub.TrackStream(iter(before + after), timeout=20)
    assert (summary.accepted, summary.duplicates) == (20, 20)
    assert writer.pid != first and writer.starts == 2
    profile = await profiles.stub.GetProfile(pb.GetProfileRequest(user_id="k1"), timeout=10)
    assert profile.event_count == 40
    # Other writes go through the new writer too.
    consent = common_pb2.Consent(personalization=False)
    answer = await profiles.stub.SetConsent(pb.SetConsentRequest(user_id="k1", consent=consent), timeout=10)
    assert not answer.consent.personalization and not answer.recently_viewed


async def test_writer_killed_during_a_stream_loses_no_acknowledged_event(profiles: Profiles) -> None:
    """Kill the writer while streams are in flight: each call either fails (UNAVAILABLE) or is
    acknowledged, and every acknowledged event is applied exactly once."""
    writer = profiles.engine.writer
    assert writer is not None
    acked: set[str] = set()
    first_ack = asyncio.Event()

    async def produce(worker: int) -> None:
        for batch in range(15):
            events = [ev(ET.PAGE_VIEW, user=f"s{i % 7}", event_id=f"w{worker}-{batch}-{i}") for i in range(40)]
            try:
                summary = await profiles.stub.TrackStream(iter(events), timeout=20)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                continue
            assert summary.accepted + summary.duplicates == 40
            acked.update(e.event_id for e in events)
            first_ack.set()

    tasks = [asyncio.create_task(produce(w)) for w in range(3)]
    await asyncio.wait_for(first_ack.wait(), 20)  # streams are flowing: kill the writer mid-way
    os.kill(writer.pid, signal.SIGKILL)  # type: ignore[arg-type]
    await asyncio.gather(*tasks)
    logged: dict[str, int] = {}
    async for event in profiles.stub.ScanEvents(pb.ScanEventsRequest(), timeout=20):
        logged[event.event_id] = logged.get(event.event_id, 0) + 1
    assert all(logged.get(eid) == 1 for eid in acked)
    assert all(n == 1 for n in logged.values())
    counted = 0
    async for p in profiles.stub.ScanProfiles(pb.ScanProfilesRequest(), timeout=20):
        counted += p.event_count
    assert counted == len(logged)
    assert len(acked) > 0


async def test_domain_errors_cross_the_process_boundary(profiles: Profiles) -> None:
    await profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon", customer_id="c1"), timeout=10)
    err = await assert_status(
        profiles.stub.Identify(pb.IdentifyRequest(anonymous_id="anon", customer_id="c2"), timeout=10),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "already merged" in err.details()


async def test_rfm_population_follows_the_writer(profiles: Profiles) -> None:
    """The service process scores RFM from counts the writer process committed."""
    purchases = [ev(ET.PURCHASE, user=f"b{i}", price=spend, order_id=f"o{i}")
                 for i, spend in enumerate((10.0, 100.0, 1000.0, 5000.0, 20.0))]
    assert (await profiles.stub.TrackStream(iter(purchases), timeout=10)).accepted == 5  # one remote batch
    assert profiles.engine.store.rfm.total == 5
    # A lone Track is committed in the service process itself; both paths keep one population.
    await profiles.stub.Track(pb.TrackRequest(event=ev(ET.PURCHASE, user="b5", price=50.0, order_id="o5")),
                              timeout=10)
    sketch = profiles.engine.store.rfm
    assert sketch.total == 6
    store = profiles.engine.store
    store.reload_rfm()  # what LMDB holds agrees with what was tracked in memory
    assert store.rfm.total == 6 and store.rfm.m == sketch.m and store.rfm.r == sketch.r
    top = await profiles.stub.GetProfile(pb.GetProfileRequest(user_id="b3"), timeout=10)
    low = await profiles.stub.GetProfile(pb.GetProfileRequest(user_id="b0"), timeout=10)
    assert top.rfm.m_score > low.rfm.m_score


async def test_graceful_stop_ends_the_writer(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    async with serving(service, service.config) as running, channel_to(running) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW)), timeout=10)
        pid = service.engine.writer.pid  # type: ignore[union-attr]
        assert pid is not None and alive(pid)
    assert wait_gone(pid, 5)


def test_writer_process_start_stop_and_ordering(tmp_path: Path) -> None:
    """Direct use: calls are answered in order, each after its commit; stop() ends the child."""
    writer = WriterProcess(tmp_path, map_size_mb=64, sync=False, settings=fold.FoldSettings())
    writer.start()
    try:
        now = int(time.time() * 1000)
        first = writer.apply_events([ev(ET.PAGE_VIEW, user="o1", event_id="x", t=now)], now)
        again = writer.apply_events([ev(ET.PAGE_VIEW, user="o1", event_id="x", t=now),
                                     ev(ET.PAGE_VIEW, user="o1", event_id="y", t=now)], now)
        assert [r.applied for r in first] == [True]
        assert [(r.applied, r.user_id) for r in again] == [(False, "o1"), (True, "o1")]
        state = writer.set_consent("o1", common_pb2.Consent(marketing=True, updated_ms=now), now)
        assert state.profile.event_count == 2 and state.profile.consent.marketing
        assert writer.delete("o1").events_deleted == 2
        pid = writer.pid
    finally:
        writer.stop()
    assert pid is not None and wait_gone(pid, 5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_no_orphan_writer_after_the_service_process_ends(tmp_path: Path, sig: int) -> None:
    """SIGTERM: graceful stop ends the writer. SIGKILL: the writer dies with its parent."""
    async with serving_process(tmp_path) as (proc, stub):
        await stub.Track(pb.TrackRequest(event=ev(ET.PAGE_VIEW)), timeout=10)
        writers = children(proc.pid)
        assert len(writers) == 1, writers
        os.kill(proc.pid, sig)
        proc.wait(20)
        if sig == signal.SIGTERM:
            assert proc.returncode == 0
        assert wait_gone(writers[0], 10), "the writer process outlived the service"
