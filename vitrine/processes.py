"""Stopping a child process the way the suite's own processes expect: SIGTERM (graceful shutdown),
then SIGKILL if it has not ended in time (for benchmarks, the CLI's helpers and the NATS server)."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], grace_s: float, kill_wait_s: float | None = None) -> None:
    """SIGTERM `process` and wait up to `grace_s` for it to end; past that, SIGKILL it and reap it
    (waiting at most `kill_wait_s`, None = as long as it takes)."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(kill_wait_s)
