"""Backends called in the gateway's own process, through the same interface as a gRPC stub.

On one machine the services may share a process (as Loki's `-target=all` or Jaeger all-in-one):
each still serves its own gRPC API on its own port, and the gateway calls the hot unary methods
(`GetProfile`, `Evaluate`, `RecommendBatch`, `Rank`, ...) of the same servicer objects directly:
no serialization, no HTTP/2, no second event-loop hop. The composer does not know the
difference: an `InProcessStub` has the stub's methods (`await stub.Method(request, timeout=s)`)
and fails the way a stub fails (`grpc.aio.AioRpcError` with the status code the servicer or
the shared interceptor would have answered), so every deadline and fallback holds as over the
network: a servicer that raises answers INTERNAL, one that does not answer in time is cancelled
at the deadline and answers DEADLINE_EXCEEDED.

What an in-process call skips: the server interceptor's bearer-token check (the caller is the
process itself), its per-RPC metrics (the gateway's backend metrics still count every call) and
its concurrency cap. Streaming methods are not called in-process: `InProcessStub` passes them
to a real stub over a channel to the service's own port.

The handlers are captured at registration: `Captured(service)` wraps a Service so that
`add_to_server` registers on the real server as usual and also keeps the method handlers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from services.common.errors import VitrineError

log = logging.getLogger(__name__)

_METADATA = grpc.aio.Metadata()


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a stub would raise for a call that ended with `code`."""
    return grpc.aio.AioRpcError(code, _METADATA, _METADATA, details)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class InProcessContext:
    """The part of grpc.aio.ServicerContext that servicers use, for a call made in-process."""

    __slots__ = ("_code", "_deadline", "_details", "_loop")

    def __init__(self, timeout: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline = None if timeout is None else self._loop.time() + timeout
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - self._loop.time(), 0.0)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise _Aborted(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    async def send_initial_metadata(self, metadata: Any) -> None:
        return None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def peer(self) -> str:
        return "in-process"

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False


def _status_of(exc: VitrineError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.code_name, grpc.StatusCode.UNKNOWN)


class _UnaryCall:
    """One unary method called in-process, with the stub's calling convention."""

    __slots__ = ("_behavior", "_method")

    def __init__(self, method: str, behavior: Any) -> None:
        self._method = method
        self._behavior = behavior

    # `timeout=` as a stub takes it: the composer calls both the same way.
    async def __call__(self, request: Any, *, timeout: float | None = None, **_: Any) -> Any:  # noqa: ASYNC109
        context = InProcessContext(timeout)
        try:
            if timeout is None:
                return await self._behavior(request, context)
            async with asyncio.timeout(timeout):
                response = await self._behavior(request, context)
            # A servicer that computes without awaiting cannot be interrupted; an answer that comes
            # after the deadline is discarded, as a stub discards it.
            if context.time_remaining() == 0.0:
                raise TimeoutError
            return response
        except TimeoutError:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, f"{self._method}: deadline exceeded") from None
        except _Aborted as aborted:
            raise rpc_error(aborted.code, aborted.details) from None
        except VitrineError as err:  # what the shared interceptor maps
            raise rpc_error(_status_of(err), err.message) from None
        except asyncio.CancelledError:
            raise
        except Exception:
            # As the interceptor does for an unhandled error: INTERNAL, and the traceback in the log.
            log.exception("unhandled error in %s (in-process call)", self._method)
            raise rpc_error(grpc.StatusCode.INTERNAL, f"internal error in {self._method}; see server logs") from None


class InProcessStub:
    """A stub whose unary methods run the captured servicer in this process; other methods
    (streams) go to `remote`, a real stub over a channel to the same service's port."""

    def __init__(self, handlers: Mapping[str, grpc.RpcMethodHandler], remote: Any = None, *,
                 service: str = "") -> None:
        self._remote = remote
        for name, handler in handlers.items():
            if handler.unary_unary is not None:
                setattr(self, name, _UnaryCall(f"/{service}/{name}" if service else name, handler.unary_unary))

    def __getattr__(self, name: str) -> Any:  # only reached for methods not run in-process
        if name.startswith("_") or self._remote is None:
            raise AttributeError(name)
        return getattr(self._remote, name)


class _CapturingServer:
    """Passed to a service's add_to_server: registers on the real server and keeps the handlers."""

    def __init__(self, server: grpc.aio.Server, into: dict[str, dict[str, grpc.RpcMethodHandler]]) -> None:
        self._server = server
        self._into = into

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(service, handlers)
        self._into.setdefault(service, {}).update(handlers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class Captured:
    """A Service that serves exactly as `service` does and keeps its method handlers, by gRPC
    service name (`handlers["vitrine.v1.ProfileService"]["GetProfile"]`)."""

    def __init__(self, service: Any) -> None:
        self.inner = service
        self.name: str = service.name
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    @property
    def service_names(self) -> Sequence[str]:
        return tuple(self.inner.service_names)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        self.inner.add_to_server(_CapturingServer(server, self.handlers))

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    def stub(self, service_name: str, remote: Any = None) -> InProcessStub:
        handlers = self.handlers.get(service_name)
        if handlers is None:
            raise ValueError(f"{self.name} registered no {service_name} (it has {sorted(self.handlers)})")
        return InProcessStub(handlers, remote, service=service_name)
