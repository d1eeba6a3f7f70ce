"""The supervisor with real child processes: restart with backoff, give up after repeated
crashes, gateway first on shutdown, the status table."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vitrine.ports import free_ports
from vitrine.supervisor import SERVICES, ServiceSpec, State, Suite, SuiteLayout, status_table

TIMEOUT = 60.0


def tiny_specs(*names: str) -> list[ServiceSpec]:
    return [ServiceSpec(name, "tests.reliability.tiny_service", 0, lambda layout: []) for name in names]


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[Suite]:
    names = ("backend", "gateway")
    layout = SuiteLayout(data_dir=tmp_path, ports=dict(zip(names, free_ports(2), strict=True)))
    running = Suite(layout, services=tiny_specs(*names), max_restarts=2, restart_window=60,
                    backoff_initial=0.05, backoff_max=0.2)
    running.start(ready_timeout=TIMEOUT)
    yield running
    running.stop()


def poll_until(suite: Suite, condition: object, timeout: float = TIMEOUT) -> list[str]:
    """Run supervision rounds until `condition()` holds; returns the messages seen."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"condition not reached; events: {messages}"
        messages += [f"{e.child}: {e.message}" for e in suite.poll()]
        time.sleep(0.02)  # a supervision tick, not synchronisation: the loop waits on the condition
    return messages


def test_a_killed_child_is_restarted_and_serves_again(suite: Suite) -> None:
    child = suite.child("backend")
    old_pid = child.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    messages = poll_until(suite, lambda: child.state is State.SERVING and child.pid != old_pid)
    assert child.restarts == 1
    assert child.last_recovery_seconds is not None and child.last_recovery_seconds > 0
    assert any("restarting" in m for m in messages)
    assert suite.child("gateway").state is State.SERVING  # the others were left alone


def test_repeated_crashes_give_up_loudly_and_keep_the_rest(suite: Suite) -> None:
    child = suite.child("backend")
    messages: list[str] = []
    for _ in range(3):  # max_restarts=2: the third crash in the window is one too many
        pid = child.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        messages += poll_until(suite, lambda pid=pid: child.state in (State.SERVING, State.FAILED)  # type: ignore[misc]
                               and (child.pid != pid or child.state is State.FAILED))
    assert child.state is State.FAILED
    assert any("giving up" in m for m in messages), messages
    assert suite.child("gateway").state is State.SERVING
    assert "FAILED" in status_table(suite.children)


def test_shutdown_stops_the_gateway_first(suite: Suite) -> None:
    assert suite.stop_order()[0].name == "gateway"
    suite.stop()
    assert all(c.state is State.STOPPED and c.process is not None and c.process.poll() is not None
               for c in suite.children)


def test_status_table_lists_every_child(suite: Suite) -> None:
    table = status_table(suite.children).splitlines()
    assert table[0].split() == ["SERVICE", "ADDRESS", "PID", "HEALTH", "RESTARTS"]
    assert [line.split()[0] for line in table[1:]] == ["backend", "gateway"]
    assert all("SERVING" in line for line in table[1:])


def test_the_real_suite_stops_gateway_first_and_starts_it_last(tmp_path: Path) -> None:
    names = [spec.name for spec in SERVICES]
    assert names[-1] == "gateway" or names.index("gateway") > names.index("profile")
    layout = SuiteLayout(data_dir=tmp_path, ports={"gateway": 1, "profile": 2, "segmentation": 3,
                                                   "recommendation": 4})
    assert Suite(layout).stop_order()[0].name == "gateway"
