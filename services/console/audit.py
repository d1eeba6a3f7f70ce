"""The audit log: one JSON line for each action an operator takes on personal data or rules.

Who (operator name and client address), what (action, target, details), when (UTC ms) and
whether it worked. Lines are appended to `<data-dir>/console/audit.jsonl` and fsynced
before the action's answer goes out, so an acknowledged action is on disk even after a
kill -9; each line is also logged. A torn last line (a crash mid-write) is skipped on read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
_TAIL_READ_BYTES = 1 << 20  # the audit page reads at most the last MiB
_LINE_BYTES_GUESS = 1024    # ... and about this much per line asked for


class AuditLog:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / AUDIT_FILE
        self._lock = threading.Lock()

    def _append(self, line: bytes) -> None:
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    async def record(self, operator: str, action: str, target: str, *, client: str = "", ok: bool = True,
                     **details: Any) -> dict[str, Any]:
        """Append one line durably; returns the entry written."""
        entry: dict[str, Any] = {
            "ts_ms": int(time.time() * 1000), "operator": operator, "client": client,
            "action": action, "target": target, "ok": ok,
        }
        if details:
            entry["details"] = details
        line = (json.dumps(entry, ensure_ascii=False, default=str, sort_keys=True) + "\n").encode()
        await asyncio.to_thread(self._append, line)
        log.info("audit %s %s by %s", action, target, operator, extra={"fields": {"audit": entry}})
        return entry

    def tail(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` entries, newest first."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - min(_TAIL_READ_BYTES, limit * _LINE_BYTES_GUESS))
            handle.seek(start)
            data = handle.read()
        lines = data.split(b"\n")
        if start > 0:
            lines = lines[1:]  # the first line may be cut by the window
        out: deque[dict[str, Any]] = deque(maxlen=limit)
        for raw in lines:
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # a line torn by a crash mid-write
            if isinstance(entry, dict):
                out.append(entry)
        return list(reversed(out))
