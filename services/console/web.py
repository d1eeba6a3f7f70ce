"""What every page handler shares: the console's state, rendering, the operator, CSRF checks."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.templating import Jinja2Templates

from services.console import formatting
from services.console.audit import AuditLog
from services.console.auth import CSRF_FIELD, CSRF_HEADER, LoginLimiter, csrf_matches, new_csrf_token
from services.console.backends import Backends
from services.console.config import ConsoleConfig

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
NAV = (("customers", "/customers", "Customers"), ("segments", "/segments", "Segments"),
       ("catalog", "/catalog", "Catalog"), ("journeys", "/journeys", "Journeys"),
       ("experiments", "/experiments", "Experiments"), ("audit", "/audit", "Audit log"))


@dataclasses.dataclass
class Console:
    config: ConsoleConfig
    password_hash: str
    audit: AuditLog
    templates: Jinja2Templates
    limiter: LoginLimiter
    dev_password: bool               # running with the development default password
    backends: Backends | None = None  # opened in the app's lifespan (channels need the event loop)

    @property
    def clients(self) -> Backends:
        assert self.backends is not None, "backends are opened by the app's lifespan"
        return self.backends


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"), context_processors=[_common_context])
    formatting.install(templates.env)
    return templates


def _common_context(request: Request) -> dict[str, Any]:
    return {"operator": operator(request), "csrf_token": csrf_token(request), "nav": NAV}


def console(request: Request) -> Console:
    state: Console = request.app.state.console
    return state


def operator(request: Request) -> str:
    return str(request.session.get("operator", "")) if "session" in request.scope else ""


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    if "session" not in request.scope:
        return ""
    token = request.session.get(CSRF_FIELD)
    if not token:
        token = new_csrf_token()
        request.session[CSRF_FIELD] = token
    return str(token)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    response: HTMLResponse = console(request).templates.TemplateResponse(
        request, template, {"active": "", **context}, status_code=status_code)
    return response


def refuse_csrf(request: Request) -> HTMLResponse:
    log.warning("CSRF token missing or wrong on %s %s", request.method, request.url.path,
                extra={"fields": {"client": client_address(request)}})
    return render(request, "error.html", status_code=403, title="Refused",
                  message="This form has expired or did not come from the console. Reload the page and try again.")


Handler = Callable[[Request, FormData], Awaitable[Response]]


def action(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A state-changing handler: refused with 403 unless the session's CSRF token came with it
    (form field `csrf_token`, or the X-CSRF-Token header that htmx sends)."""

    @functools.wraps(handler)
    async def checked(request: Request) -> Response:
        form = await request.form()
        sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
        if not csrf_matches(request.session.get(CSRF_FIELD), sent if isinstance(sent, str) else None):
            return refuse_csrf(request)
        return await handler(request, form)

    checked.csrf_protected = True  # type: ignore[attr-defined]
    return checked


async def audit(request: Request, action: str, target: str, *, ok: bool = True, **details: Any) -> None:
    """One line in the audit log: the operator's action, from where, and what came of it."""
    await console(request).audit.record(operator(request), action, target, client=client_address(request), ok=ok,
                                        **details)


async def refused(request: Request, action: str, target: str, err: Exception, *, status_code: int, title: str,
                  back: str, **details: Any) -> HTMLResponse:
    """A backend refused the operator's action: audited as failed, shown as an error page."""
    await audit(request, action, target, ok=False, error=str(err), **details)
    return render(request, "error.html", status_code=status_code, title=title, message=str(err), back=back)


def form_text(form: FormData, name: str, limit: int, default: str = "") -> str:
    value = form.get(name, default)
    return value.strip()[:limit] if isinstance(value, str) else default
