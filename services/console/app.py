"""The console web application (Starlette) and its entry point (`python -m services.console`).

`build_app(config)` returns the ASGI app; the gRPC channels are opened in its lifespan,
inside the server's event loop. Every page but /login, /healthz and /static needs a login;
every state-changing form needs the session's CSRF token (see web.action).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.config import load_config
from services.console import pages_customer, pages_ops, pages_segments
from services.console.audit import AuditLog
from services.console.auth import LoginLimiter, check_hash_format, hash_password, verify_password
from services.console.backends import Backends
from services.console.config import DEFAULT_PORT, DEV_PASSWORD, SERVICE_NAME, SESSION_COOKIE, ConsoleConfig
from services.console.web import (
    PACKAGE_DIR,
    Console,
    action,
    client_address,
    console,
    form_text,
    make_templates,
    render,
)

log = logging.getLogger(__name__)

OPEN_PATHS = ("/login", "/healthz", "/static/")


class LoginRequired:
    """Pure ASGI middleware (inside the session middleware): no page without a logged-in operator.
    A browser is sent to /login; an htmx request gets 401 with HX-Redirect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OPEN_PATHS) or scope["session"].get("operator"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        response: Response
        if headers.get(b"hx-request") == b"true":
            response = PlainTextResponse("login required", status_code=401, headers={"HX-Redirect": "/login"})
        elif scope["method"] in ("GET", "HEAD"):
            response = RedirectResponse("/login", status_code=303)
        else:
            response = PlainTextResponse("login required", status_code=401)
        await response(scope, receive, send)


class SecurityHeaders:
    """No framing, no sniffing, no referrer, scripts and styles only from the console itself."""

    HEADERS = (
        (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store"),
        (b"content-security-policy",
         b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((n, v) for n, v in self.HEADERS if n not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


async def login_page(request: Request) -> Response:
    if request.session.get("operator"):
        return RedirectResponse("/customers", status_code=303)
    return render(request, "login.html", dev_password=console(request).dev_password)


@action
async def login(request: Request, form: FormData) -> Response:
    state = console(request)
    client = client_address(request)
    if state.limiter.blocked(client):
        return render(request, "login.html", status_code=429, dev_password=state.dev_password,
                      error="Too many failed logins from this address; wait a few minutes.")
    name = form_text(form, "operator", 64)
    password = form.get("password")
    if not name or not isinstance(password, str) or not verify_password(password, state.password_hash):
        state.limiter.failed(client)
        log.warning("failed console login", extra={"fields": {"client": client, "operator": name}})
        return render(request, "login.html", status_code=401, dev_password=state.dev_password,
                      error="Wrong operator name or password.")
    state.limiter.succeeded(client)
    request.session.clear()  # a new session (and CSRF token) at login: no fixation
    request.session["operator"] = name
    await state.audit.record(name, "login", "console", client=client)
    return RedirectResponse("/customers", status_code=303)


@action
async def logout(request: Request, form: FormData) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def home(request: Request) -> Response:
    return RedirectResponse("/customers", status_code=303)


async def not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    return render(request, "error.html", status_code=status, title="Not here",
                  message="There is no such page." if status == 404 else "This request is not allowed.")


async def server_error(request: Request, exc: Exception) -> Response:
    # Logged with its traceback; the operator sees a plain page, never a stack trace.
    log.error("console page failed: %s %s", request.method, request.url.path, exc_info=exc)
    return render(request, "error.html", status_code=500, title="Something went wrong",
                  message="The console could not build this page; the error is in the console's log.")


def _password_hash(config: ConsoleConfig) -> tuple[str, bool]:
    if config.password_hash:
        check_hash_format(config.password_hash)
        return config.password_hash, False
    if config.password:
        return hash_password(config.password), False
    if config.production:
        raise SystemExit("console: production mode needs --password or --password-hash "
                         "(VITRINE_CONSOLE_PASSWORD / VITRINE_CONSOLE_PASSWORD_HASH)")
    log.warning("console: no password configured; development mode accepts %r", DEV_PASSWORD)
    return hash_password(DEV_PASSWORD), True


def build_app(config: ConsoleConfig) -> Starlette:
    password_hash, dev = _password_hash(config)
    state = Console(config=config, password_hash=password_hash, audit=AuditLog(Path(config.data_dir) / SERVICE_NAME),
                    templates=make_templates(), limiter=LoginLimiter(), dev_password=dev)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.backends = Backends(config)
        try:
            yield
        finally:
            await state.backends.close()
            state.backends = None

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/login", login_page),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *pages_customer.routes, *pages_segments.routes, *pages_ops.routes,
        Mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=config.session_secret or secrets.token_urlsafe(32),
                   session_cookie=SESSION_COOKIE, max_age=config.session_max_age_seconds, same_site="lax",
                   https_only=config.production or bool(config.tls_cert_file)),
        Middleware(LoginRequired),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_found, Exception: server_error})
    app.state.console = state
    return app


def load(argv: Sequence[str] | None = None) -> ConsoleConfig:
    return load_config(ConsoleConfig, SERVICE_NAME, argv, defaults={"port": DEFAULT_PORT},
                       description="Vitrine console: the operator's web pages over HTTP")


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from services.common.logs import configure_logging
    from services.common.metrics import start_metrics_server

    config = load(argv)
    configure_logging(SERVICE_NAME, config.log_level)
    start_metrics_server(config.metrics_port)
    app = build_app(config)
    log.info("console on http%s://%s:%d", "s" if config.tls_cert_file else "", config.host, config.port)
    # uvicorn drains in-flight requests on SIGTERM for up to grace_seconds.
    uvicorn.run(app, host=config.host, port=config.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=int(config.grace_seconds), server_header=False,
                ssl_certfile=config.tls_cert_file or None, ssl_keyfile=config.tls_key_file or None)
