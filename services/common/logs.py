"""JSON logs to stdout, one object a line, from one place for every service.

Use lazy `%` arguments (`log.info("loaded %d items", n)`); pass structured fields
with `extra={"fields": {...}}`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from services.common.metrics import ABANDONED_RESPONSES

_RESERVED = frozenset(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in ("fields", "message") and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


_ABANDONED = "ExecuteBatchError raised in core by servicer method ["


class AbandonedCalls(logging.Filter):
    """gRPC's asyncio server logs an ERROR with a traceback for every answer it cannot send because
    the caller had already gone, which is routine when callers keep tight deadlines (the gateway
    gives each backend part of its 50 ms). Such records become a count per method and a DEBUG
    line; every other record passes."""

    def __init__(self, count: Callable[[str], None]) -> None:
        super().__init__()
        self.count = count

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_ABANDONED):
            return True
        method = message[len(_ABANDONED):].rstrip("]")
        self.count(method)
        logging.getLogger(__name__).debug("answer to %s not sent: the caller had gone", method)
        return False


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    grpc_core = logging.getLogger("grpc._cython.cygrpc")
    grpc_core.filters[:] = [f for f in grpc_core.filters if not isinstance(f, AbandonedCalls)]
    grpc_core.addFilter(AbandonedCalls(lambda method: ABANDONED_RESPONSES.labels(method).inc()))


class LogOnce:
    """Which recurring conditions were logged already. A fallback or unexpected error is counted
    in its metric every time and logged the first time only (per key): never silent, and a
    condition that repeats per request cannot flood the log."""

    def __init__(self) -> None:
        self._seen: set[Hashable] = set()
        self._lock = threading.Lock()  # the wire reader's fallbacks also happen in worker threads

    def first(self, key: Hashable) -> bool:
        """True the first time `key` is seen."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True
