"""Issue #16: the Personalize deployment options side by side in one run, against the echo ceiling
measured in the same run, on a load-test store (`vitrine loadtest --start-suite --load-only`).

    python -m benchmarks.loadtest.modes --data-dir /tmp/vitrine-load --rounds 2 --seconds 8 \
        --concurrency 8,32 --out benchmarks/loadtest/modes

Modes (the same data directory, one mode running at a time):
  echo         the bare grpc.aio echo server (the ceiling)
  tcp          today's default: four processes, the gateway calls its backends over loopback TCP
  tcp-2gw      the same with two gateway processes on one port (SO_REUSEPORT)
  uds          four processes, the gateway calls its backends over Unix domain sockets
  shared-grpc  one process (services.gateway.all_in_one --no-in-process), calls over loopback gRPC
  shared       one process, the gateway calls the servicers in-process (services.gateway.all_in_one)
Then the failure runs: the same closed loop while a backend crashes or hangs (tcp: the process is
killed / stopped; shared: the backend raises / never answers / blocks the event loop), counting the
answers that came inside the deadline and the degraded ones.

Everything is bounded: each measurement `--seconds` (≤ 60), each start-up 180 s. Writes results.json
and results.md to --out; the summary table goes to benchmarks/README.md by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from vitrine.health import wait_serving
from vitrine.loadtest.cpu import CpuSampler
from vitrine.loadtest.run import child_env, sample_users
from vitrine.ports import free_port
from vitrine.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0
DEADLINE_MS = 50             # the gateway's default budget: the answers are counted against it
DEADLINE_SLACK_MS = 20.0     # client-side queueing and the loopback hop on a loaded 2-core machine
MODES = ("tcp", "tcp-2gw", "uds", "shared-grpc", "shared")
FAULTS = {  # mode -> faults
    "tcp": ("recommendation-killed", "segmentation-stopped"),
    "shared": ("recommendation-raises", "segmentation-hangs", "segmentation-blocks"),
}


def _env() -> dict[str, str]:
    # Run from a checkout (benchmarks/ is not installed): children import it from ROOT.
    return {**child_env(), "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}


@dataclasses.dataclass
class Running:
    gateway: str
    profile: str
    processes: dict[str, subprocess.Popen[bytes]]

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items()}


def _spawn(module: str, argv: list[str], log: Path, extra_env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    # The workload is Personalize only (no new events): the signals' feed follower has nothing to do in a
    # steady state, but after each start it would replay the log since its last checkpoint and bill
    # that to whichever mode runs. Frozen signals make every mode serve the same state.
    env = {**_env(), "VITRINE_LOG_LEVEL": "WARNING", "VITRINE_RECOMMENDATION_FOLLOW_EVENTS": "0",
           **(extra_env or {})}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, *argv], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _wait(address: str, process: subprocess.Popen[bytes]) -> None:
    wait_serving(address, time.monotonic() + START_TIMEOUT_S, process)


QUIET_CORES = 0.15           # after start-up, wait until the suite uses less than this (feed catch-up done)
QUIET_WAIT_S = 90.0          # ... for at most this long
QUIET_GRACE_S = 3.0
QUIET_SECONDS = 3            # consecutive quiet seconds
START_ATTEMPTS = 3           # a free port taken by another process between the pick and the bind


@contextlib.contextmanager
def start(mode: str, data_dir: Path, logs: Path, fault: str = "") -> Iterator[Running]:
    """The suite in `mode` on `data_dir` (fresh ports on a failed start); stopped on exit."""
    for attempt in range(1, START_ATTEMPTS + 1):
        stack = contextlib.ExitStack()
        try:
            running = stack.enter_context(_start(mode, data_dir, logs, fault))
        except RuntimeError as err:
            stack.close()
            if attempt == START_ATTEMPTS:
                raise
            print(f"{mode} did not start ({err}); again with other ports", file=sys.stderr)
            continue
        with stack:
            _quiesce(running)
            yield running
        return


def _quiesce(running: Running) -> None:
    """Until the suite is idle: the feed followers (recommendation signals, segmentation results,
    journeys) catch up on the log after every start, which is not Personalize's cost."""
    from vitrine.loadtest.cpu import cpu_seconds

    def used() -> float:
        return sum(cpu_seconds(p.pid) or 0.0 for p in running.processes.values())

    deadline = time.monotonic() + QUIET_WAIT_S
    time.sleep(QUIET_GRACE_S)  # followers connect after start-up
    before, at = used(), time.monotonic()
    quiet = 0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now_used, now = used(), time.monotonic()
        quiet = quiet + 1 if (now_used - before) / (now - at) < QUIET_CORES else 0
        if quiet >= QUIET_SECONDS:
            return
        before, at = now_used, now
    print(f"the suite did not quiet down within {QUIET_WAIT_S:.0f} s; measuring anyway", file=sys.stderr)


@contextlib.contextmanager
def _start(mode: str, data_dir: Path, logs: Path, fault: str = "") -> Iterator[Running]:
    """The suite in `mode` on `data_dir`; stopped (SIGTERM, then SIGKILL) on exit."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        gateway_port = free_port()
        if mode.startswith("shared"):
            shared_ports = [free_port() for _ in range(3)]
            argv = ["--port", str(gateway_port), "--data-dir", str(data_dir), "--profile-port", str(shared_ports[0]),
                    "--segmentation-port", str(shared_ports[1]), "--recommendation-port", str(shared_ports[2])]
            if mode == "shared-grpc":
                argv.append("--no-in-process")
            module = "services.gateway.all_in_one"
            if fault:
                module, argv = "benchmarks.loadtest.faulty", ["--fault", fault, *argv]
            processes["all-in-one"] = _spawn(module, argv, logs / f"{mode}.log")
            _wait(f"127.0.0.1:{gateway_port}", processes["all-in-one"])
            profile = f"127.0.0.1:{shared_ports[0]}"
        else:
            if mode == "uds":
                sockets = logs / "sockets"
                sockets.mkdir(parents=True, exist_ok=True)
                # build_server binds "<host>:<port>": with a unix: host that is a socket path.
                hosts = {name: f"unix:{sockets}/{name}" for name in ("profile", "segmentation", "recommendation")}
                address = {name: f"{host}:0" for name, host in hosts.items()}
                ports = {name: "0" for name in hosts}
            else:
                hosts = {name: "127.0.0.1" for name in ("profile", "segmentation", "recommendation")}
                ports = {name: str(free_port()) for name in hosts}
                address = {name: f"127.0.0.1:{ports[name]}" for name in hosts}
            common = ["--data-dir", str(data_dir)]
            processes["profile"] = _spawn("services.profile", ["--host", hosts["profile"], "--port", ports["profile"],
                                                               *common], logs / f"{mode}-profile.log")
            _wait(address["profile"], processes["profile"])
            for name in ("segmentation", "recommendation"):
                processes[name] = _spawn(f"services.{name}", [
                    "--host", hosts[name], "--port", ports[name], *common,
                    "--profile-addresses", address["profile"]], logs / f"{mode}-{name}.log")
            for name in ("segmentation", "recommendation"):
                _wait(address[name], processes[name])
            processes["gateway"] = _spawn("services.gateway", [
                "--port", str(gateway_port), "--profile-addresses", address["profile"],
                "--segmentation-address", address["segmentation"],
                "--recommendation-address", address["recommendation"],
                "--processes", "2" if mode == "tcp-2gw" else "1"], logs / f"{mode}-gateway.log")
            _wait(f"127.0.0.1:{gateway_port}", processes["gateway"])
            profile = address["profile"]
        yield Running(f"127.0.0.1:{gateway_port}", profile, processes)
    finally:
        for name in ("gateway", "all-in-one", "recommendation", "segmentation", "profile"):
            process = processes.get(name)
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            stop_process(process, 20, 10)


@contextlib.contextmanager
def echo_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "vitrine.loadtest.echo", "--port", str(port)], cwd=ROOT,
                               env=_env(), stdout=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield f"127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(10)


def drive(target: str, mode: str, concurrency: int, seconds: float, users: Path | None, store: dict[str, Any],
          pids: dict[str, int]) -> dict[str, Any]:
    """One closed-loop measurement with the CPU of every process over its window."""
    argv = [sys.executable, "-m", "benchmarks.loadtest.closed_loop", "--target", target, "--mode", mode,
            "--concurrency", str(concurrency), "--seconds", str(seconds),
            "--within-ms", str(DEADLINE_MS + DEADLINE_SLACK_MS)]
    if users is not None:
        width = max(6, len(str(max(store["products"] - 1, 0))))
        argv += ["--users", str(users), "--products", str(store["products"]), "--product-width", str(width)]
    with CpuSampler(pids) as sampler:
        process = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
        sampler.add("driver", process.pid)
        try:
            stdout, _ = process.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    if process.returncode != 0:
        raise RuntimeError(f"closed-loop driver failed ({process.returncode})")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    used = sampler.window(result["started_unix"], result["ended_unix"])
    answers = max(result["answers"] + result["errors"], 1)
    result["cpu_ms_per_answer"] = {name: 1000.0 * value / answers for name, value in used.items()}
    result["cores"] = {name: value / result["seconds"] for name, value in used.items()}
    return result


def _fault_on(running: Running, fault: str) -> None:
    if fault == "recommendation-killed":
        running.processes["recommendation"].kill()
        running.processes["recommendation"].wait(10)
    elif fault == "segmentation-stopped":
        running.processes["segmentation"].send_signal(signal.SIGSTOP)
    else:  # the shared process applies it on SIGUSR1 (benchmarks/loadtest/faulty.py)
        running.processes["all-in-one"].send_signal(signal.SIGUSR1)


def _loadavg() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="a load-test store (vitrine loadtest --start-suite --data-dir DIR --load-only)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--concurrency", default="8,32", help="closed-loop callers, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2, help="every mode this many times, interleaved")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--only-faults", action="store_true", help="the failure runs only (no mode rounds)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "modes")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 60 or not 1 <= args.rounds <= 5:
        raise SystemExit("--seconds within (0, 60], --rounds within 1..5")
    store_file = args.data_dir / "loadtest-store.json"
    if not store_file.exists():
        raise SystemExit(f"{args.data_dir} holds no load-test store: run vitrine loadtest --start-suite "
                         f"--data-dir {args.data_dir} --load-only first")
    store = json.loads(store_file.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    levels = [int(c) for c in args.concurrency.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    load_before = _loadavg()
    runs: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []

    def save() -> None:  # after every measurement: a run cut short keeps what it measured
        meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
                           f"grpcio {grpc.__version__}",
                "load": f"1-min load average {load_before:.1f} before, {_loadavg():.1f} now",
                "store": store.get("description", ""), "seconds": args.seconds, "deadline_ms": DEADLINE_MS,
                "slack_ms": DEADLINE_SLACK_MS}
        results = {"meta": meta, "runs": runs, "faults": faults, "summary": summarize(runs)}
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        (args.out / "results.md").write_text(markdown(results))

    users_file = args.out / "users.txt"
    with start("shared", args.data_dir, logs) as running:
        known = [u for u in sample_users([running.profile], store["shoppers"]) if not u.startswith("new-")]
    users_file.write_text("\n".join(known))
    print(f"{len(known)} shopper ids sampled", file=sys.stderr)

    for round_no in range(0 if args.only_faults else args.rounds):
        for concurrency in levels:
            with echo_server() as (address, process):
                result = drive(address, "echo", concurrency, args.seconds, None, store, {"echo": process.pid})
            runs.append({**result, "round": round_no, "mode": "echo"})
            save()
        for mode in modes:
            with start(mode, args.data_dir, logs) as running:
                for concurrency in levels:
                    result = drive(running.gateway, "personalize", concurrency, args.seconds, users_file, store,
                                   running.pids)
                    runs.append({**result, "round": round_no, "mode": mode})
                    save()
                    print(f"round {round_no} {mode} c={concurrency}: {result['clean_per_s']:.0f} clean/s "
                          f"({result['degraded_share']:.1%} degraded), load {_loadavg():.1f}", file=sys.stderr)

    if not args.no_faults:
        concurrency = levels[0]
        for mode, names in FAULTS.items():
            for fault in names:
                with start(mode, args.data_dir, logs, fault if mode == "shared" else "") as running:
                    before = drive(running.gateway, "personalize", concurrency, args.seconds / 2, users_file, store,
                                   running.pids)
                    _fault_on(running, fault)
                    during = drive(running.gateway, "personalize", concurrency, args.seconds, users_file, store,
                                   {k: v for k, v in running.pids.items() if k != "recommendation"})
                faults.append({"mode": mode, "fault": fault, "before": before, "during": during})
                save()
                print(f"{mode} {fault}: {during['within_deadline_share']:.1%} inside the deadline, "
                      f"p99 {during['p99_ms']:.1f} ms, {during['degraded_share']:.1%} degraded", file=sys.stderr)

    save()
    users_file.unlink(missing_ok=True)
    print((args.out / "results.md").read_text())


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: the best clean answers/s over concurrency levels, median over rounds; the ratio to
    the same run's echo ceiling (best echo answers/s)."""
    import statistics

    def best(mode: str, key: str) -> float:
        per_round: dict[int, float] = {}
        for run in runs:
            if run["mode"] == mode:
                per_round[run["round"]] = max(per_round.get(run["round"], 0.0), run[key])
        return statistics.median(per_round.values()) if per_round else 0.0

    echo = best("echo", "answers_per_s")
    modes = sorted({r["mode"] for r in runs} - {"echo"}, key=lambda m: MODES.index(m) if m in MODES else 99)
    return {"echo_ceiling": echo,
            "modes": {m: {"clean_per_s": best(m, "clean_per_s"), "ratio": best(m, "clean_per_s") / echo if echo else 0}
                      for m in modes}}


def markdown(results: dict[str, Any]) -> str:
    meta, summary = results["meta"], results["summary"]
    lines = [f"# Personalize deployment modes (issue #16), {meta['when']}", "",
             f"{meta['machine']}; {meta['load']}; store: {meta['store']}; {meta['seconds']:g} s per measurement.", "",
             f"Echo ceiling (same run): **{summary['echo_ceiling']:.0f}** answers/s.", "",
             "| mode | clean answers/s (best concurrency, median of rounds) | ratio to echo |", "|---|---:|---:|"]
    for mode, figures in summary["modes"].items():
        lines.append(f"| {mode} | {figures['clean_per_s']:.0f} | {figures['ratio']:.2f} |")
    lines += ["", "Every measurement:", "",
              "| round | mode | callers | answers/s | clean/s | degraded | p50 ms | p99 ms | CPU ms per answer |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for run in results["runs"]:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(run.get("cpu_ms_per_answer", {}).items()))
        lines.append(f"| {run['round']} | {run['mode']} | {run['concurrency']} | {run['answers_per_s']:.0f} | "
                     f"{run['clean_per_s']:.0f} | {run['degraded_share']:.1%} | {run['p50_ms']:.1f} | "
                     f"{run['p99_ms']:.1f} | {cpu} |")
    if results["faults"]:
        lines += ["", f"Failures (deadline {meta['deadline_ms']} ms; 'inside' = answered within "
                      f"{meta['deadline_ms'] + meta['slack_ms']:g} ms at the client):", "",
                  "| mode | fault | answers/s before → during | inside the deadline | degraded | errors | p50 ms | "
                  "p99 ms | max ms |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for item in results["faults"]:
            b, d = item["before"], item["during"]
            lines.append(f"| {item['mode']} | {item['fault']} | {b['answers_per_s']:.0f} → {d['answers_per_s']:.0f} | "
                         f"{d['within_deadline_share']:.1%} | {d['degraded_share']:.1%} | {d['errors']} | "
                         f"{d['p50_ms']:.1f} | {d['p99_ms']:.1f} | {d['max_ms']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
