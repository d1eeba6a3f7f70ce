"""One server interceptor for the cross-cutting work of every RPC.

It checks the bearer token, refuses calls until the service is ready, caps the
calls in flight, answers requests that do not decode with INVALID_ARGUMENT
(services.common.decoding), maps domain errors (services.common.errors) to status
codes, and records Prometheus metrics. Wrapped handlers are cached per method, so the per-call
cost is a dict lookup and a few clock reads.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common.decoding import Undecodable, UndecodableMessage, safe_deserializer
from services.common.errors import VitrineError
from services.common.metrics import ABANDONED_RESPONSES, RPC_IN_FLIGHT, RPC_LATENCY, RPC_REQUESTS

log = logging.getLogger(__name__)

# Health checks and reflection need no token (Kubernetes' gRPC probes cannot send one)
# and must answer while the service is still starting.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ServiceGate:
    """Readiness and load state shared between the server and its interceptor."""

    def __init__(self, max_concurrent: int = 0) -> None:
        self.ready = False
        self.in_flight = 0
        self.max_concurrent = max_concurrent


def _status_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, VitrineError):
        return getattr(grpc.StatusCode, exc.code_name, grpc.StatusCode.UNKNOWN)
    if isinstance(exc, NotImplementedError):
        # The generated servicer base raises it for an RPC of the proto the service does not serve yet.
        return grpc.StatusCode.UNIMPLEMENTED
    return grpc.StatusCode.UNKNOWN


def _caller_gone(exc: BaseException, context: grpc.aio.ServicerContext) -> bool:
    """The caller cancelled or its deadline passed, so the answer (an abort included) cannot be
    sent: gRPC's core raises ExecuteBatchError from the send. Not a server error (#19)."""
    return type(exc).__name__ == "ExecuteBatchError" or context.cancelled()


def _abort_handler(code: grpc.StatusCode, message: str, template: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    kwargs = {
        "request_deserializer": template.request_deserializer,
        "response_serializer": template.response_serializer,
    }
    if template.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
    if template.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    if template.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service: str, gate: ServiceGate, auth_token: str = "") -> None:
        self.service = service
        self.gate = gate
        self._expected = f"Bearer {auth_token}".encode() if auth_token else b""
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method.startswith(OPEN_SERVICES):
            open_handler = self._wrapped.get(method)
            if open_handler is None:
                inner = await continuation(details)
                if inner is None:
                    return None
                open_handler = self._wrapped[method] = _decoding_only(self.service, method, inner)
            return open_handler
        handler = self._wrapped.get(method)
        if handler is None:
            inner = await continuation(details)
            if inner is None:
                return None  # unknown method: grpc answers UNIMPLEMENTED
            handler = self._wrapped[method] = self._wrap(method, inner)
        if self._expected and not self._authorized(details):
            return _abort_handler(grpc.StatusCode.UNAUTHENTICATED,
                                  "missing or wrong bearer token in 'authorization' metadata", handler)
        if not self.gate.ready:
            return _abort_handler(grpc.StatusCode.UNAVAILABLE,
                                  f"{self.service} is starting; retry when health reports SERVING", handler)
        if self.gate.max_concurrent and self.gate.in_flight >= self.gate.max_concurrent:
            RPC_REQUESTS.labels(self.service, method, "RESOURCE_EXHAUSTED").inc()
            return _abort_handler(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"{self.service} is at its limit of {self.gate.max_concurrent} calls "
                                  "in flight; retry with backoff", handler)
        return handler

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected)
        return False

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, gate = self.service, self.gate
        latency = RPC_LATENCY.labels(service, method)
        in_flight = RPC_IN_FLIGHT.labels(service)
        abandoned = ABANDONED_RESPONSES.labels(method)
        counters: dict[grpc.StatusCode, Any] = {}

        def finish(started: float, code: grpc.StatusCode) -> None:
            gate.in_flight -= 1
            in_flight.dec()
            latency.observe(time.perf_counter() - started)
            counter = counters.get(code)
            if counter is None:
                counter = counters[code] = RPC_REQUESTS.labels(service, method, code.name)
            counter.inc()

        async def fail(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
            code = _status_of(exc)
            if code is grpc.StatusCode.UNKNOWN:
                log.exception("unhandled error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see server logs")
            await context.abort(code, str(getattr(exc, "message", exc)))
            return code  # pragma: no cover - abort raises

        def code_after(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
            code = context.code()
            return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK

        async def stream_response(behavior: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            gate.in_flight += 1
            in_flight.inc()
            code = grpc.StatusCode.OK
            try:
                if type(request) is Undecodable:
                    code = grpc.StatusCode.INVALID_ARGUMENT
                    await context.abort(code, request.message)
                async for item in behavior(request, context):
                    yield item
                code = code_after(context)
            except grpc.aio.AbortError:
                code = code_after(context)
                raise
            except Exception as exc:
                if _caller_gone(exc, context):
                    code = grpc.StatusCode.CANCELLED
                    abandoned.inc()
                    return
                code = _status_of(exc)
                if code is grpc.StatusCode.UNKNOWN:
                    code = grpc.StatusCode.INTERNAL
                await fail(exc, context)
            finally:
                finish(started, code)

        kwargs = _safe_kwargs(service, method, handler)
        # Real `async def` closures: grpc.aio runs anything that is not a coroutine or
        # async-generator function in a thread pool.
        unary_inner: Any = handler.unary_unary or handler.stream_unary
        stream_inner: Any = handler.unary_stream or handler.stream_stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # One coroutine per call (no inner helper): this runs for every RPC of every service.
            started = time.perf_counter()
            gate.in_flight += 1
            in_flight.inc()
            code = grpc.StatusCode.OK
            try:
                if type(request) is Undecodable:
                    code = grpc.StatusCode.INVALID_ARGUMENT
                    await context.abort(code, request.message)
                response = await unary_inner(request, context)
                code = code_after(context)
                return response
            except grpc.aio.AbortError:
                code = code_after(context)
                raise
            except Exception as exc:
                if _caller_gone(exc, context):
                    code = grpc.StatusCode.CANCELLED
                    abandoned.inc()
                    return None
                code = _status_of(exc)
                if code is grpc.StatusCode.UNKNOWN:
                    code = grpc.StatusCode.INTERNAL
                await fail(exc, context)
            finally:
                finish(started, code)

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in stream_response(stream_inner, request, context):
                yield item

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)


def _safe_kwargs(service: str, method: str, handler: grpc.RpcMethodHandler) -> dict[str, Any]:
    return {
        "request_deserializer": safe_deserializer(service, method, handler.request_deserializer,
                                                  stream=bool(handler.request_streaming)),
        "response_serializer": handler.response_serializer,
    }


def _decoding_only(service: str, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Health and reflection keep their own handlers; only undecodable requests are answered here."""
    kwargs = _safe_kwargs(service, method, handler)
    if handler.unary_unary:
        inner_unary: Any = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if type(request) is Undecodable:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return await inner_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
    if handler.unary_stream:
        inner_stream: Any = handler.unary_stream

        if not inspect.isasyncgenfunction(inner_stream):  # health's Watch writes with context.write
            async def unary_writes(request: Any, context: grpc.aio.ServicerContext) -> None:
                if type(request) is Undecodable:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                await inner_stream(request, context)

            return grpc.unary_stream_rpc_method_handler(unary_writes, **kwargs)

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if type(request) is Undecodable:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async for item in inner_stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
    if handler.stream_stream and inspect.isasyncgenfunction(handler.stream_stream):
        inner_bidi: Any = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in inner_bidi(requests, context):
                    yield item
            except UndecodableMessage as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
    return handler
