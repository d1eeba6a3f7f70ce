"""Client channels to other Vitrine services: long-lived, keepalive, optional TLS and token.

Open a channel once per backend at start-up and keep its stubs; never per request.
Every call made on them must still carry its own `timeout=`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from services.common.config import ServerConfig

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after a backend restarts (default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 1),
    # Balance calls (not just connections) over every address a DNS name resolves to, e.g. a
    # headless Service's pods; harmless for a single address.
    ("grpc.lb_policy_name", "round_robin"),
)


class _BearerToken(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call (works on plaintext channels too)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                     request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)

    async def intercept_stream_stream(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                      request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


def open_channel(
    target: str,
    *,
    auth_token: str = "",
    tls_ca_file: str = "",
    tls: bool = False,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An aio channel to `target` ("host:port"), TLS when `tls` or a CA file is given."""
    interceptors = [_BearerToken(auth_token)] if auth_token else None
    all_options = [*CHANNEL_OPTIONS, *options]
    if tls or tls_ca_file:
        root = Path(tls_ca_file).read_bytes() if tls_ca_file else None
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.aio.secure_channel(target, credentials, options=all_options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=all_options, interceptors=interceptors)


def channel_for(target: str, config: ServerConfig, *, tls: bool = False) -> grpc.aio.Channel:
    """A channel to another Vitrine service using this service's token and CA settings."""
    return open_channel(target, auth_token=config.auth_token, tls_ca_file=config.tls_ca_file, tls=tls)
