"""CPU time per process during each load step, from /proc/<pid>/stat (Linux).

A background thread samples utime + stime of every named process a few times a second;
the generator reports each step's wall-clock window, and the CPU spent inside that window
(linearly interpolated between samples) divided by the requests answered gives CPU
milliseconds per request per process — the figure that says where a request's cost goes,
independent of how contended the machine was.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

SAMPLE_SECONDS = 0.2
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def own_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of `pid` itself (all its threads, and children it has reaped); None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()  # the command name may contain spaces
    # utime + stime, plus cutime + cstime of children it has waited for.
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / _TICKS


def child_pids(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc; empty elsewhere)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    """CPU time of `pid`, its threads and its live descendants (e.g. the profile service's writer
    process, extra gateway processes); None when it is gone or not on Linux."""
    total = own_cpu_seconds(pid)
    if total is None:
        return None
    for child in child_pids(pid):
        total += cpu_seconds(child) or 0.0
    return total


class CpuSampler:
    """Samples the CPU time of named processes until stopped; `window()` integrates one step."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.times: list[float] = []
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def _sample(self) -> None:
        now = time.time()
        values = {}
        last = self.samples[-1] if self.samples else {}
        for name, pid in list(self.pids.items()):
            seconds = cpu_seconds(pid)
            if seconds is None:
                seconds = last.get(name)  # exited (e.g. the generator at its end): it spends no more
            if seconds is not None:
                values[name] = seconds
        self.times.append(now)
        self.samples.append(values)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _at(self, name: str, when: float) -> float | None:
        i = bisect.bisect_left(self.times, when)
        if i == 0 or i >= len(self.times):
            return None
        t0, t1 = self.times[i - 1], self.times[i]
        v0, v1 = self.samples[i - 1].get(name), self.samples[i].get(name)
        if v0 is None or v1 is None:
            return None
        return v0 + (v1 - v0) * ((when - t0) / (t1 - t0) if t1 > t0 else 0.0)

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each process spent between two wall-clock times."""
        out = {}
        for name in self.pids:
            a, b = self._at(name, start), self._at(name, end)
            if a is not None and b is not None:
                out[name] = b - a
        return out


def annotate(run: dict[str, Any], sampler: CpuSampler) -> None:
    """Adds `cpu_ms_per_request` {process: ms} and `cores` {process: share} to every step."""
    for step in run["steps"]:
        start, end = step.get("started_unix"), step.get("ended_unix")
        if start is None or end is None or end <= start:
            continue
        used = sampler.window(start, end)
        sent = step["ok"] + step["error_count"] - step["errors"].get("client_backlog", 0)
        answered = max(sent, 1)
        step["cpu_ms_per_request"] = {k: 1000.0 * v / answered for k, v in used.items()}
        step["cores"] = {k: v / (end - start) for k, v in used.items()}
