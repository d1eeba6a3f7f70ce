"""Operator login and CSRF tokens.

The password is never kept in clear: it becomes a scrypt hash (stdlib `hashlib.scrypt`) at
start, or is configured as one. Failed logins are limited per client address. Every form
that changes something carries the session's CSRF token (synchronizer token pattern);
htmx sends it as the X-CSRF-Token header.

`python -m services.console.auth` prints the hash of a password read from stdin, for
`--password-hash` / VITRINE_CONSOLE_PASSWORD_HASH.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import secrets
import sys
import time
from collections.abc import Callable

from services.console.config import LOGIN_FAILURES_ALLOWED, LOGIN_WINDOW_S

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$<salt b64>$<hash b64>`."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_hash_format(encoded: str) -> None:
    """Raise ValueError unless `encoded` is a hash made by `hash_password`."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        raise ValueError("password hash must look like scrypt$N$r$p$salt$hash (python -m services.console.auth)")
    base64.b64decode(parts[4], validate=True)
    base64.b64decode(parts[5], validate=True)


def verify_password(password: str, encoded: str) -> bool:
    check_hash_format(encoded)
    _, n, r, p, salt, expected = encoded.split("$")
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                            dklen=32)
    return hmac.compare_digest(digest, base64.b64decode(expected))


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(session_token: str | None, sent: str | None) -> bool:
    return bool(session_token) and bool(sent) and hmac.compare_digest(str(session_token), str(sent))


class LoginLimiter:
    """At most LOGIN_FAILURES_ALLOWED failed logins per client address in a sliding window."""

    def __init__(self, allowed: int = LOGIN_FAILURES_ALLOWED, window_s: float = LOGIN_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.allowed = allowed
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, collections.deque[float]] = {}

    def _recent(self, client: str) -> collections.deque[float]:
        times = self._failures.setdefault(client, collections.deque())
        horizon = self.clock() - self.window_s
        while times and times[0] < horizon:
            times.popleft()
        return times

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= self.allowed

    def failed(self, client: str) -> None:
        self._recent(client).append(self.clock())
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures = {k: v for k, v in self._failures.items() if v}

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def main() -> None:
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise SystemExit("give the password on stdin")
    print(hash_password(password))


if __name__ == "__main__":
    main()
