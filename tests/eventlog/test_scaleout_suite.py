"""`vitrine up --event-log nats://...`: the suite's plan in scale-out mode (two profile shards, each
told its index, the count and the partitions; the gateway routing by partition), and the profile
shards and the gateway as real processes under the supervisor on a real nats-server: Track through
the gateway, the profile read back through it with the Track's position."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from services.eventlog.partitions import partition_of
from tests.eventlog.helpers import event
from vitrine.commands import up
from vitrine.nats_server import NatsNode
from vitrine.ports import free_port, free_port_base
from vitrine.supervisor import DEFAULT_PORTS, SERVICES, SHARD_PORT_STEP, Suite, SuiteLayout, plan
from vitrine.v1 import common_pb2, gateway_pb2_grpc, profile_pb2, profile_pb2_grpc

PARTITIONS = 4


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_up_plans_two_scale_out_shards_by_default(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    args = parser.parse_args(["--event-log", "nats://127.0.0.1:4222", "--data-dir", str(tmp_path)])
    assert args.profile_shards == 0 and args.event_log == "nats://127.0.0.1:4222"
    layout = SuiteLayout(data_dir=tmp_path, ports=dict(DEFAULT_PORTS), profile_shards=2,
                         event_log=args.event_log, event_log_partitions=args.event_log_partitions)
    children = {c.name: c for c in plan(layout)}
    for i in range(2):
        argv = children[f"profile-{i}"].argv
        assert (flag(argv, "--event-log"), flag(argv, "--shard-index"), flag(argv, "--shard-count"),
                flag(argv, "--event-log-partitions")) == (args.event_log, str(i), "2", "16")
    assert flag(children["gateway"].argv, "--event-log") == args.event_log
    # The embedded default is unchanged: no scale-out flag anywhere.
    embedded = SuiteLayout(data_dir=tmp_path, ports=dict(DEFAULT_PORTS), profile_shards=2)
    assert not any("--event-log" in c.argv for c in plan(embedded))


def test_scale_out_suite_tracks_through_the_gateway(nats_node: NatsNode, tmp_path: Path) -> None:
    ports = {**DEFAULT_PORTS, "profile": free_port_base(2, SHARD_PORT_STEP), "gateway": free_port(),
             "segmentation": free_port(), "recommendation": free_port()}
    layout = SuiteLayout(data_dir=tmp_path / "data", ports=ports, profile_shards=2, event_log=nats_node.url,
                         event_log_partitions=PARTITIONS)
    services = [s for s in SERVICES if s.name in ("profile", "gateway")]
    with Suite(layout, env={"VITRINE_LOG_LEVEL": "WARNING"}, services=services) as suite:
        assert [c.name for c in suite.children] == ["profile-0", "profile-1", "gateway"]
        with grpc.insecure_channel(layout.address("gateway")) as channel:
            gateway = gateway_pb2_grpc.PersonalizationServiceStub(channel)
            answers = [gateway.Track(profile_pb2.TrackRequest(event=event(i)), timeout=10) for i in range(14)]
            assert all(a.applied for a in answers) and [a.seq for a in answers] == list(range(1, 15))
            for user in sorted({event(i).user_id for i in range(14)}):
                last = max(a.seq for i, a in enumerate(answers) if event(i).user_id == user)
                profile: common_pb2.Profile = gateway.GetProfile(
                    profile_pb2.GetProfileRequest(user_id=user, min_seq=last), timeout=10)
                assert profile.event_count == sum(1 for i in range(14) if event(i).user_id == user)
        # Each shopper is on the shard owning their partition (partition % 2), and only there.
        for shard, address in enumerate(layout.profile_addresses()):
            with grpc.insecure_channel(address) as channel:
                stub = profile_pb2_grpc.ProfileServiceStub(channel)
                held = {p.user_id for p in stub.ScanProfiles(profile_pb2.ScanProfilesRequest(limit=100), timeout=10)}
            assert held == {event(i).user_id for i in range(14) if partition_of(event(i).user_id, PARTITIONS) % 2
                            == shard}
