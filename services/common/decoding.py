"""Requests whose bytes do not decode: INVALID_ARGUMENT, a counter and a rate-limited log line.

grpc.aio's default for a request that fails to deserialize is `UNKNOWN` ("Unexpected
DecodeError") and an ERROR line with a full traceback per request, so a hostile caller could
fill the disk through the logs. The interceptor swaps every method's deserializer for
`safe_deserializer`: a unary request that does not decode becomes an `Undecodable` marker the
interceptor answers with INVALID_ARGUMENT; a message of a request stream raises
`UndecodableMessage` (an InvalidArgument) inside the servicer's `async for`, which the
interceptor maps to INVALID_ARGUMENT like any domain error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from services.common.errors import InvalidArgument
from services.common.metrics import UNDECODABLE_REQUESTS

log = logging.getLogger(__name__)

# At most one log line per method per interval about undecodable requests (the counter has them all).
UNDECODABLE_LOG_INTERVAL_SECONDS = 60.0


class UndecodableMessage(InvalidArgument):
    """A message of a request stream did not decode."""


class Undecodable:
    """Stands for a unary request whose bytes did not decode."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class RateLimitedLog:
    """Logs a WARNING at most once per `interval` per key, with how many were left out since."""

    def __init__(self, logger: logging.Logger, interval: float = UNDECODABLE_LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: Any) -> bool:
        """Log `msg % args` unless `key` was logged within the interval; True when it was logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        self.logger.warning(msg + " (%d more like it since the last line)", *args, suppressed,
                            extra={"fields": {"method": key, "suppressed": suppressed}})
        return True


_LOG = RateLimitedLog(log)


def describe(exc: BaseException, size: int) -> str:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return f"request bytes ({size} B) are not a valid protobuf message of this method's type: {reason}"


def safe_deserializer(service: str, method: str,
                      deserializer: Callable[[bytes], Any] | None, *, stream: bool) -> Callable[[bytes], Any]:
    """`deserializer` that never raises into gRPC's core: see the module docstring."""
    counter = UNDECODABLE_REQUESTS.labels(service, method)
    if deserializer is None:
        return lambda raw: raw

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # protobuf's DecodeError, and anything a custom deserializer raises
            counter.inc()
            message = describe(exc, len(raw))
            _LOG.warning(method, "undecodable request to %s: %s", method, message)
            if stream:
                raise UndecodableMessage(f"a message of the request stream: {message}") from None
            return Undecodable(message)

    return decode
