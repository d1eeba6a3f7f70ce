"""Free loopback ports for tests, benchmarks and the CLI's `--start-suite` runs (one implementation)."""

from __future__ import annotations

import contextlib
import random
import socket

HOST = "127.0.0.1"
# Where `free_port_base` looks for a base port: below the usual ephemeral range, above the defaults.
BASE_RANGE = (20_000, 30_000)
BASE_ATTEMPTS = 100


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 right now (all bound at once, so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port() -> int:
    """One port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def free_port_base(count: int, step: int) -> int:
    """A port p with p, p + step, ..., p + (count - 1) * step all free (profile shards listen so)."""
    for _ in range(BASE_ATTEMPTS):
        base = random.randrange(*BASE_RANGE)
        try:
            with contextlib.ExitStack() as stack:
                for i in range(count):
                    stack.enter_context(socket.socket()).bind((HOST, base + i * step))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} free ports {step} apart in {BASE_RANGE}")
