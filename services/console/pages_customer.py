"""The customer page and its actions: consent, erasure, JSON export."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.console.backends import BackendError, call
from services.console.config import AFFINITY_BARS, MAX_QUERY_LENGTH, RECENT_AUDIT_LINES, TIMELINE_EVENTS
from services.console.customer import load_customer
from services.console.web import action, audit, console, form_text, refused, render
from vitrine.v1 import common_pb2, profile_pb2


def _customer_url(user_id: str, **flags: str) -> str:
    extra = "".join(f"&{key}={quote(value)}" for key, value in flags.items())
    return f"/customers?q={quote(user_id)}{extra}"


def _actions_on(request: Request, user_id: str) -> list[dict[str, Any]]:
    """The recent operator actions on this shopper, newest first (from the audit log's tail)."""
    return [e for e in console(request).audit.tail(RECENT_AUDIT_LINES) if e.get("target") == user_id]


async def customer_page(request: Request) -> Response:
    query = request.query_params.get("q", "").strip()[:MAX_QUERY_LENGTH]
    if not query:
        return render(request, "customer_search.html", active="customers")
    view = await load_customer(console(request).clients, query)
    status = 404 if view.not_found else (503 if view.error else 200)
    actions = await asyncio.to_thread(_actions_on, request, view.profile.user_id if view.profile else query)
    erasure = next((e for e in actions if e.get("action") == "customer.erase" and e.get("ok")), None)
    return render(request, "customer.html", status_code=status, active="customers", view=view,
                  affinities=view.affinities(AFFINITY_BARS), erasure=erasure if view.not_found else None,
                  actions=actions, timeline_limit=TIMELINE_EVENTS, flash=request.query_params.get("done", ""))


@action
async def set_consent(request: Request, form: FormData) -> Response:
    user_id = form_text(form, "user_id", MAX_QUERY_LENGTH)
    consent = common_pb2.Consent(personalization=form.get("personalization") == "on",
                                 marketing=form.get("marketing") == "on",
                                 analytics=form.get("analytics") == "on")
    state = console(request)
    wanted = {"personalization": consent.personalization, "marketing": consent.marketing,
              "analytics": consent.analytics}
    try:
        await call("gateway", state.clients.gateway.SetConsent,
                   profile_pb2.SetConsentRequest(user_id=user_id, consent=consent))
    except BackendError as err:
        return await refused(request, "customer.consent", user_id, err, status_code=404 if err.not_found else 503,
                             title="Consent not changed", back=_customer_url(user_id), consent=wanted)
    await audit(request, "customer.consent", user_id, consent=wanted)
    return RedirectResponse(_customer_url(user_id, done="consent"), status_code=303)


@action
async def erase(request: Request, form: FormData) -> Response:
    user_id = form_text(form, "user_id", MAX_QUERY_LENGTH)
    if not user_id or form_text(form, "confirm", MAX_QUERY_LENGTH) != user_id:
        return render(request, "error.html", status_code=400, title="Not erased",
                      message="To erase a shopper, type their id into the confirmation box.",
                      back=_customer_url(user_id))
    state = console(request)
    try:
        reply = await call("gateway", state.clients.gateway.DeleteProfile,
                           profile_pb2.DeleteProfileRequest(user_id=user_id))
    except BackendError as err:
        return await refused(request, "customer.erase", user_id, err, status_code=503, title="Not erased",
                             back=_customer_url(user_id))
    await audit(request, "customer.erase", user_id, ok=reply.deleted, events_deleted=reply.events_deleted,
                aliases_deleted=reply.aliases_deleted)
    return RedirectResponse(_customer_url(user_id), status_code=303)


@action
async def export(request: Request, form: FormData) -> Response:
    user_id = form_text(form, "user_id", MAX_QUERY_LENGTH)
    state = console(request)
    try:
        reply = await call("gateway", state.clients.gateway.ExportProfile,
                           profile_pb2.ExportProfileRequest(user_id=user_id))
    except BackendError as err:
        return await refused(request, "customer.export", user_id, err, status_code=404 if err.not_found else 503,
                             title="No export", back=_customer_url(user_id))
    await audit(request, "customer.export", user_id, bytes=len(reply.json))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user_id)
    return Response(reply.json, media_type="application/json",
                    headers={"content-disposition": f'attachment; filename="vitrine-{safe}.json"'})


routes = [
    Route("/customers", customer_page),
    Route("/customers/consent", set_consent, methods=["POST"]),
    Route("/customers/erase", erase, methods=["POST"]),
    Route("/customers/export", export, methods=["POST"]),
]
