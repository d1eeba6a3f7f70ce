"""The writer process: owns every LMDB write transaction of the profile store.

Why a process: receiving gRPC messages and folding events into profiles are both CPU-bound
Python, and in one interpreter they share one core's worth of GIL. The service process
receives and validates; this process folds, writes and fsyncs (group commit), so ingest uses
two cores. LMDB is multi-process safe: the service process keeps reading the same files.

Protocol over a socketpair (`multiprocessing.connection.Connection` framing, pickle):
request `(op, args)`, reply `(True, value)` or `(False, exception)`, strictly one at a time
and in order, so writes stay serialized exactly as with the former writer thread.
`apply_events` travels as serialized events and comes back as a compact result (one flag
byte per event plus the profile ids), which keeps pickling off the hot path.

The child dies with its parent (PR_SET_PDEATHSIG, and EOF on the socket), ignores SIGINT
(the service stops it in order), and a SIGKILL at any moment is safe: LMDB commits are
atomic. A dead writer is restarted on the next write; the call it was serving fails with
UNAVAILABLE (its transaction either committed or not; a retry is deduplicated by event_id).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from services.common.errors import Unavailable
from services.common.logs import configure_logging
from services.profile import config as C
from services.profile import fold
from services.profile.metrics import WRITER_STARTS
from services.profile.store import DeleteResult, LmdbProfileStore, TrackResult
from vitrine.v1 import common_pb2, profile_pb2

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1
READY = b"ready"

# Store methods the writer serves besides apply_events (all of them write transactions).
WRITE_OPS = frozenset({"identify", "set_consent", "delete", "import_profile", "put_alias", "purge_events",
                       "expire_idempotency", "trim_log"})



class WriterProcess:
    """Parent side: starts the child, forwards write calls, restarts it after a crash.

    Calls are blocking and must come from one thread (the engine's writer thread). The child
    is started from that same thread on purpose: PR_SET_PDEATHSIG fires when the *thread*
    that forked the child exits, and the engine's writer thread lives until stop().
    """

    def __init__(self, path: str | Path, *, map_size_mb: int, sync: bool, settings: fold.FoldSettings,
                 log_level: str = "INFO", start_timeout: float = C.WRITER_START_TIMEOUT_SECONDS) -> None:
        self.args = {"path": os.path.abspath(path), "map_size_mb": map_size_mb, "sync": sync,
                     "affinity_half_life_ms": settings.affinity_half_life_ms,
                     "visit_timeout_ms": settings.visit_timeout_ms, "log_level": log_level}
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self.starts = 0
        # Hooks set by the engine: RFM deltas of each commit, and "a new child is serving".
        self.on_rfm: Callable[[dict[bytes, int]], None] | None = None
        self.on_start: Callable[[], None] | None = None
        self._lock = threading.Lock()  # guards against misuse from two threads

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and self._conn is not None

    def start(self) -> None:
        """Start the child and wait until it has opened the store."""
        parent_sock, child_sock = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.profile.writer", "--fd", str(child_sock.fileno()),
                 "--parent", str(os.getpid()), "--settings", json.dumps(self.args)],
                pass_fds=(child_sock.fileno(),), env=_child_env(),
            )
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        self.starts += 1
        WRITER_STARTS.inc()
        try:
            if not conn.poll(self.start_timeout) or conn.recv_bytes() != READY:
                raise Unavailable("the profile writer process did not start")
        except (EOFError, OSError) as exc:
            conn.close()
            self._reap()
            raise Unavailable("the profile writer process exited during start-up; see its log") from exc
        except BaseException:
            conn.close()
            self._reap()
            raise
        self._conn = conn
        if self.on_start is not None:
            self.on_start()
        log.info("profile writer process %d started", self.process.pid,
                 extra={"fields": {"writer_pid": self.process.pid, "starts": self.starts}})

    def _reap(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()

    def _lost(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        code = self.process.poll() if self.process is not None else None
        self._reap()
        log.error("profile writer process exited (code %s); restarting it on the next write", code,
                  extra={"fields": {"exit_code": code}})

    def call(self, op: str, *args: Any) -> Any:
        with self._lock:
            if not self.alive():
                if self.process is not None:
                    self._lost()
                self.start()
            request = pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                self._conn.send_bytes(request)  # type: ignore[union-attr]
            except OSError:
                # The child was gone before it could read the request: nothing of it ran,
                # so a new child can safely take it.
                self._lost()
                self.start()
                self._conn.send_bytes(request)  # type: ignore[union-attr]
            try:
                ok, value, deltas = pickle.loads(self._conn.recv_bytes())  # type: ignore[union-attr]
            except (EOFError, OSError) as exc:
                self._lost()
                raise Unavailable("the profile writer process exited during a write; retry") from exc
        if self.on_rfm is not None:
            for d in deltas:
                self.on_rfm(d)
        if not ok:
            raise value
        return value

    def stop(self, timeout: float = C.WRITER_STOP_TIMEOUT_SECONDS) -> None:
        """Ask the child to exit after its current transaction; kill it if it does not."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send_bytes(pickle.dumps(("stop", ())))
                except OSError:
                    pass
                self._conn.close()
                self._conn = None
            if self.process is not None:
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("profile writer %d did not stop in %.0f s; killing it", self.process.pid, timeout)
                    self.process.kill()
                    self.process.wait()

    # ------------------------------------------------------------- the store's write methods
    def apply_events(self, events: Sequence[common_pb2.Event], now_ms: int) -> list[TrackResult]:
        # One message for the whole group (one C call each way), not one pickled string per event.
        batch = profile_pb2.TrackBatchRequest(events=events).SerializeToString()
        flags, users, seq = self.call("apply_events", batch, now_ms)
        results = []
        for applied, user in zip(flags, users, strict=True):
            if applied:  # applied events took consecutive seqs from the first one
                results.append(TrackResult(True, user, seq))
                seq += 1
            else:
                results.append(TrackResult(False, user))
        return results

    def identify(self, anonymous_id: str, customer_id: str, traits: dict[str, str],
                 now_ms: int) -> profile_pb2.StoredProfile:
        return self.call("identify", anonymous_id, customer_id, dict(traits), now_ms)

    def set_consent(self, user_id: str, consent: common_pb2.Consent, now_ms: int) -> profile_pb2.StoredProfile:
        return self.call("set_consent", user_id, consent, now_ms)

    def delete(self, user_id: str, now_ms: int = 0) -> DeleteResult:
        return self.call("delete", user_id, now_ms)

    def import_profile(self, profile: common_pb2.Profile, events: Sequence[common_pb2.Event],
                       now_ms: int) -> profile_pb2.StoredProfile:
        return self.call("import_profile", profile, list(events), now_ms)

    def put_alias(self, alias_id: str, target_id: str) -> bool:
        return self.call("put_alias", alias_id, target_id)

    def purge_events(self, cutoff_ms: int, start_key: bytes, max_keys: int) -> tuple[int, bytes | None]:
        return self.call("purge_events", cutoff_ms, start_key, max_keys)

    def expire_idempotency(self, cutoff_s: int, start_key: bytes, max_keys: int) -> tuple[int, bytes | None]:
        return self.call("expire_idempotency", cutoff_s, start_key, max_keys)

    def trim_log(self, cutoff_ms: int, max_keys: int) -> tuple[int, bool]:
        return self.call("trim_log", cutoff_ms, max_keys)


def _child_env() -> dict[str, str]:
    """Our environment, with the directory `services` was imported from first on the path
    (the service may run from a checkout in another working directory)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


# ------------------------------------------------------------------------------ child side
def _apply_serialized(store: LmdbProfileStore, batch: bytes, now_ms: int) -> tuple[bytes, list[str], int]:
    """Apply a serialized TrackBatchRequest; answer compactly: an applied flag per event, the
    profile ids, and the first seq given out (applied events take consecutive seqs)."""
    results = store.apply_events(profile_pb2.TrackBatchRequest.FromString(batch).events, now_ms)
    first = next((r.seq for r in results if r.applied), 0)
    return bytes(r.applied for r in results), [r.user_id for r in results], first


def serve(conn: Connection, store: LmdbProfileStore) -> None:
    """Answer write requests until the parent says stop or goes away."""
    committed: list[dict[bytes, int]] = []
    store.on_commit = committed.append
    while True:
        try:
            op, args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the parent is gone
        if op == "stop":
            return
        committed.clear()
        try:
            if op == "apply_events":
                reply: tuple[bool, Any, list[dict[bytes, int]]] = (True, _apply_serialized(store, *args), committed)
            elif op in WRITE_OPS:
                reply = (True, getattr(store, op)(*args), committed)
            else:
                raise ValueError(f"unknown writer operation {op!r}")
        except Exception as exc:  # handed back to the caller, who maps it to a status
            if not hasattr(exc, "code_name"):
                log.exception("profile writer: %s failed", op)
            reply = (False, exc, committed)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an exception that does not pickle: keep its text
            data = pickle.dumps((False, RuntimeError(repr(reply[1])), committed))
        try:
            conn.send_bytes(data)
        except OSError:
            return


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: EOF on the socket still ends us
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="profile writer process (started by the profile service)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--settings", required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the parent stops us
    settings = json.loads(args.settings)
    configure_logging("profile-writer", settings["log_level"])
    conn = Connection(args.fd)
    store = LmdbProfileStore(settings["path"], map_size_mb=settings["map_size_mb"], sync=settings["sync"],
                             settings=fold.FoldSettings(affinity_half_life_ms=settings["affinity_half_life_ms"],
                                                        visit_timeout_ms=settings["visit_timeout_ms"]))
    try:
        conn.send_bytes(READY)
        serve(conn, store)
    finally:
        store.close()
        conn.close()


if __name__ == "__main__":
    main()
