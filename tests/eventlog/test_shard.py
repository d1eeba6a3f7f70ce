"""Profile shards as state stores of the JetStream log (real nats-server): the fold equals the
embedded one, a restart resumes exactly once from the cursor committed with the fold, a wiped
shard rebuilds from the stream and serves equal profiles, erasure reaches the shard."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.eventlog.jetstream import JetStreamLog, JetStreamSettings
from services.eventlog.partitions import owned_partitions
from services.eventlog.shard import ScaleOutTrack, ShardConsumer
from services.profile.store import LmdbProfileStore
from tests.eventlog.helpers import event, open_store, profiles
from vitrine.nats_server import NatsNode

PARTITIONS = 4
SHARDS = 2
N = 90
WAIT = 20.0


@pytest.fixture
async def log(nats_node: NatsNode) -> AsyncIterator[JetStreamLog]:
    log = await JetStreamLog.connect(JetStreamSettings(servers=(nats_node.url,), partitions=PARTITIONS))
    yield log
    await log.close()


async def start_shard(log: JetStreamLog, path: Path, shard: int) -> ShardConsumer:
    consumer = ShardConsumer(log, open_store(path), owned_partitions(shard, SHARDS, PARTITIONS))
    await consumer.start()
    return consumer


async def stop_shard(consumer: ShardConsumer) -> None:
    await consumer.stop()
    consumer.store.close()


async def wait_all(consumers: list[ShardConsumer], log: JetStreamLog, seqs: list[tuple[str, int]]) -> None:
    for user_id, seq in seqs:
        p = log.partition_of(user_id)
        owner = next(c for c in consumers if p in c.partitions)
        assert await owner.wait_applied(p, seq, wait_s=WAIT), f"seq {seq} of partition {p} not applied"


def reference(tmp_path: Path, n: int) -> dict[str, bytes]:
    """The embedded default's fold of the same events."""
    store = LmdbProfileStore(tmp_path / "reference", map_size_mb=64)
    try:
        store.apply_events([event(i) for i in range(n)], 0)
        return profiles(store)
    finally:
        store.close()


async def test_shards_fold_like_the_embedded_store_and_rebuild_from_the_stream(
        log: JetStreamLog, tmp_path: Path) -> None:
    shards = [await start_shard(log, tmp_path / f"shard{i}", i) for i in range(SHARDS)]
    track = ScaleOutTrack(log, retention_days=400)
    try:
        seqs = []
        for start in range(0, N, 30):
            events = [event(i) for i in range(start, start + 30)]
            seqs += [(e.user_id, seq) for e, (seq, _) in zip(events, await track.track_batch(events), strict=True)]
        assert [s for _, s in seqs] == list(range(1, N + 1))
        await wait_all(shards, log, seqs)
        served = {**profiles(shards[0].store), **profiles(shards[1].store)}
        assert served == reference(tmp_path, N)
        assert not set(profiles(shards[0].store)) & set(profiles(shards[1].store))  # each shopper on one shard
        # A retried Track is a duplicate: same position, not applied again.
        assert await track.track(event(5)) == (6, False)

        # Restart: resumes from the cursor committed with the fold, nothing applied twice.
        before = profiles(shards[0].store)
        path = shards[0].store.path
        await stop_shard(shards[0])
        shards[0] = await start_shard(log, path, 0)
        more = [event(i) for i in range(N, N + 10)]
        seqs = [(e.user_id, seq) for e, (seq, _) in zip(more, await track.track_batch(more), strict=True)]
        await wait_all(shards, log, seqs)
        served = {**profiles(shards[0].store), **profiles(shards[1].store)}
        assert served == reference(tmp_path / "second", N + 10)
        assert shards[0].items_applied == sum(1 for e in more if shards[0].owns(e.user_id))

        # Wipe shard 0's LMDB: it rebuilds from the stream and serves the same profiles.
        before = profiles(shards[0].store)
        await stop_shard(shards[0])
        shutil.rmtree(path)
        shards[0] = await start_shard(log, path, 0)
        await wait_all([shards[0]], log, [(u, s) for u, s in seqs if shards[0].owns(u)])
        last = {p: max((s for u, s in seqs if log.partition_of(u) == p), default=0) for p in shards[0].partitions}
        for p, seq in last.items():
            assert await shards[0].wait_applied(p, seq, wait_s=WAIT)
        assert profiles(shards[0].store) == before
    finally:
        for shard in shards:
            await stop_shard(shard)


async def test_erasure_reaches_the_owning_shard(log: JetStreamLog, tmp_path: Path) -> None:
    shards = [await start_shard(log, tmp_path / f"shard{i}", i) for i in range(SHARDS)]
    track = ScaleOutTrack(log, retention_days=400)
    try:
        events = [event(i) for i in range(28)]
        seqs = [(e.user_id, seq) for e, (seq, _) in zip(events, await track.track_batch(events), strict=True)]
        await wait_all(shards, log, seqs)
        owner = next(s for s in shards if s.owns("shopper-2"))
        assert owner.store.get("shopper-2") is not None
        erased = await log.erase(["shopper-2"], 1)
        await wait_all(shards, log, [("shopper-2", erased)])
        assert owner.store.get("shopper-2") is None
        assert owner.store.get("shopper-3") is not None or any(s.store.get("shopper-3") for s in shards)
    finally:
        for shard in shards:
            await stop_shard(shard)
