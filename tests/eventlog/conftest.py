"""Real nats-server fixtures (JetStream): one node, and a three-node cluster. They skip, saying
why, where Debian's `nats-server` is not installed (`.ci/run` installs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vitrine.nats_server import NatsNode, cluster, nats_server_binary, single_node

NO_NATS = "nats-server is not installed (apt-get install -y nats-server): JetStream tests skip"


@pytest.fixture
def nats_node(tmp_path: Path) -> Iterator[NatsNode]:
    if nats_server_binary() is None:
        pytest.skip(NO_NATS)
    node = single_node(tmp_path / "nats")
    node.start()
    yield node
    node.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsNode]]:
    if nats_server_binary() is None:
        pytest.skip(NO_NATS)
    nodes = cluster(tmp_path / "nats", 3)
    for node in nodes:
        node.start()
    yield nodes
    for node in nodes:
        node.stop()
