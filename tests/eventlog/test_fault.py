"""Faults in scale-out mode, as real processes: while Tracks stream in, kill -9 one NATS node of a
three-node cluster (the stream has R=3) and one profile shard process, wipe that shard's LMDB and
restart it. Afterwards every acknowledged event is applied exactly once: each shard's LMDB equals
the embedded fold of exactly the acknowledged events of its shoppers, so the rebuilt shard holds
the profiles it held before it was lost (plus the events acknowledged meanwhile), byte for byte.

The default variant is one round (about 15 s, most of it NATS leader elections); the slow one
runs two rounds, the second killing another node and the other shard (under a minute)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import nats.errors
import nats.js.errors
import pytest

from services.eventlog.config import STREAM_NAME
from services.eventlog.partitions import partition_of
from services.profile.store import LmdbProfileStore
from tests.eventlog.helpers import event, open_store, profiles
from vitrine.nats_server import NatsNode
from vitrine.ports import free_port_base
from vitrine.supervisor import DEFAULT_PORTS, SERVICES, SHARD_PORT_STEP, Child, SuiteLayout, plan, wait_serving
from vitrine.v1 import profile_pb2, profile_pb2_grpc

PARTITIONS = 4
SHARDS = 2
USERS = 12
CALL_TIMEOUT_S = 3.0
CATCH_UP_S = 60.0
MAX_EVENTS = 20_000  # bounds on the traffic, whatever the timing
PAUSE_S = 0.005      # between Tracks: at most ~200 events/s


def owner(user_id: str) -> int:
    return partition_of(user_id, PARTITIONS) % SHARDS


class Shards:
    """The profile shard processes, started from the supervisor's own plan (the `vitrine up` argv)."""

    def __init__(self, root: Path, nodes: list[NatsNode]) -> None:
        self.layout = SuiteLayout(data_dir=root, ports={**DEFAULT_PORTS, "profile": free_port_base(SHARDS,
                                                                                                   SHARD_PORT_STEP)},
                                  profile_shards=SHARDS, event_log=",".join(n.url for n in nodes),
                                  event_log_partitions=PARTITIONS)
        self.children: list[Child] = plan(self.layout, [s for s in SERVICES if s.name == "profile"])
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, shard: int) -> None:
        child = self.children[shard]
        with (self.logs / f"{child.name}.log").open("ab") as log:
            child.process = subprocess.Popen(
                [*child.argv, "--event-log-replicas", "3", "--log-level", "WARNING"], stdout=log,
                stderr=subprocess.STDOUT)
        wait_serving(child.address, time.monotonic() + 60, child.process)

    def kill(self, shard: int) -> None:
        process = self.children[shard].process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.terminate()
                child.process.wait(30)

    def data_dir(self, shard: int) -> Path:
        return self.layout.profile_data_dir(shard) / "profile"

    def addresses(self) -> list[str]:
        return [c.address for c in self.children]


class Traffic:
    """Tracks one at a time (each answered after JetStream's ack), retried on error on the other
    shard: event_id makes the retry idempotent. Records each acknowledged event's position."""

    def __init__(self, addresses: list[str]) -> None:
        self.channels = [grpc.insecure_channel(a) for a in addresses]
        self.stubs = [profile_pb2_grpc.ProfileServiceStub(c) for c in self.channels]
        self.acked: dict[int, int] = {}  # event index -> seq
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        for channel in self.channels:
            channel.close()

    def _run(self) -> None:
        target = 0
        for i in range(MAX_EVENTS):
            while True:
                if self._stop.is_set():
                    return
                try:
                    reply = self.stubs[target].Track(profile_pb2.TrackRequest(event=event(i, USERS)),
                                                     timeout=CALL_TIMEOUT_S)
                except grpc.RpcError:
                    self.errors += 1
                    target = 1 - target
                    time.sleep(0.05)
                    continue
                self.acked[i] = reply.seq
                time.sleep(PAUSE_S)
                break

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        """Until `n` more events are acknowledged (so each fault happens under traffic)."""
        goal = len(self.acked) + n
        deadline = time.monotonic() + timeout
        while len(self.acked) < goal:
            assert time.monotonic() < deadline, f"traffic stalled at {len(self.acked)} acknowledged events"
            time.sleep(0.02)


async def _current(urls: list[str]) -> bool:
    nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=1)
    try:
        info = await nc.jetstream(timeout=2).stream_info(STREAM_NAME)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return False
    finally:
        await nc.close()
    cluster = info.cluster
    return bool(cluster and cluster.leader and cluster.replicas and len(cluster.replicas) == 2
                and all(r.current and not r.offline for r in cluster.replicas))


def wait_rejoined(nodes: list[NatsNode], timeout: float = 60.0) -> None:
    """Until the stream has a leader and both followers are current: only then may the next round
    kill another node (two nodes down of three is no majority: the stream would stop)."""
    deadline = time.monotonic() + timeout
    while not asyncio.run(_current([n.url for n in nodes])):
        assert time.monotonic() < deadline, "the NATS cluster did not recover its three stream replicas"
        time.sleep(0.2)


def wait_applied(addresses: list[str], acked: dict[int, int]) -> None:
    """Each shopper's owner has applied their last acknowledged position (GetProfile(min_seq))."""
    last: dict[str, int] = {}
    for i, seq in acked.items():
        user = event(i, USERS).user_id
        last[user] = max(last.get(user, 0), seq)
    deadline = time.monotonic() + CATCH_UP_S
    for user, seq in last.items():
        with grpc.insecure_channel(addresses[owner(user)]) as channel:
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            while True:
                try:
                    stub.GetProfile(profile_pb2.GetProfileRequest(user_id=user, min_seq=seq), timeout=5)
                    break
                except grpc.RpcError as err:
                    assert time.monotonic() < deadline, f"{user} seq {seq} not applied: {err}"


def reference(path: Path, acked: dict[int, int]) -> dict[str, bytes]:
    """The embedded fold of exactly the acknowledged events, in stream order."""
    store = LmdbProfileStore(path, map_size_mb=64)
    try:
        store.apply_events([event(i, USERS) for i, _ in sorted(acked.items(), key=lambda kv: kv[1])], 0)
        return profiles(store)
    finally:
        store.close()


@pytest.fixture
def shards(nats_cluster: list[NatsNode], tmp_path: Path) -> Iterator[Shards]:
    running = Shards(tmp_path / "suite", nats_cluster)
    try:
        for shard in range(SHARDS):
            running.start(shard)
        yield running
    finally:
        running.stop()


def run_rounds(shards: Shards, nodes: list[NatsNode], tmp_path: Path, rounds: int) -> None:
    with Traffic(shards.addresses()) as traffic:
        traffic.wait_for(30)
        for r in range(rounds):
            node, shard = nodes[r % len(nodes)], r % SHARDS
            node.kill()                         # one NATS node of three: the R=3 stream keeps a majority
            traffic.wait_for(30)
            shards.kill(shard)                  # kill -9 a profile shard ...
            shutil.rmtree(shards.data_dir(shard))  # ... lose its volume ...
            traffic.wait_for(20)                # (events keep coming, to its partitions too)
            shards.start(shard)                 # ... and restart it: it rebuilds from the stream
            traffic.wait_for(30)
            node.start()                        # the node rejoins before the next round kills another
            wait_rejoined(nodes)
            traffic.wait_for(20)
    acked = dict(traffic.acked)
    assert len(set(acked.values())) == len(acked), "two events acknowledged at one position"
    wait_applied(shards.addresses(), acked)
    shards.stop()  # SIGTERM: then the test reads the LMDB files
    expected = reference(tmp_path / "reference", acked)
    for shard in range(SHARDS):
        store = open_store(shards.data_dir(shard))
        try:
            held = profiles(store)
        finally:
            store.close()
        mine = {u: p for u, p in expected.items() if owner(u) == shard}
        assert held == mine, f"shard {shard} differs from the fold of the acknowledged events"


def test_kill_a_nats_node_and_a_shard_under_traffic(shards: Shards, nats_cluster: list[NatsNode],
                                                    tmp_path: Path) -> None:
    run_rounds(shards, nats_cluster, tmp_path, rounds=1)


@pytest.mark.slow
def test_kill_nodes_and_shards_repeatedly(shards: Shards, nats_cluster: list[NatsNode], tmp_path: Path) -> None:
    run_rounds(shards, nats_cluster, tmp_path, rounds=2)
