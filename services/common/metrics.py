"""Prometheus metrics shared by every service, and the /metrics HTTP endpoint."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# Buckets from 50 µs to 2.5 s: the hot path lives well below a millisecond.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)

RPC_REQUESTS = Counter(
    "vitrine_grpc_server_handled_total",
    "RPCs completed, by service, method and status code",
    ["service", "method", "code"],
)
RPC_LATENCY = Histogram(
    "vitrine_grpc_server_handling_seconds",
    "Time to handle an RPC (to the last response message for streams)",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)
RPC_IN_FLIGHT = Gauge("vitrine_grpc_server_in_flight", "RPCs being handled", ["service"])
SERVICE_READY = Gauge("vitrine_service_ready", "1 once the service reports SERVING", ["service"])
UNDECODABLE_REQUESTS = Counter(
    "vitrine_grpc_server_undecodable_requests_total",
    "Request messages whose bytes did not decode as the method's protobuf type (answered "
    "INVALID_ARGUMENT), by service and method",
    ["service", "method"],
)
ABANDONED_RESPONSES = Counter(
    "vitrine_grpc_server_abandoned_responses_total",
    "Answers gRPC could not send because the caller had already gone (its deadline passed or it "
    "cancelled), by method",
    ["method"],
)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> int | None:
    """Serve /metrics on `port` (0 = any free port, negative = off); returns the bound port."""
    if port < 0:
        return None
    server, _thread = start_http_server(port, addr=host)
    bound = server.server_port
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound
