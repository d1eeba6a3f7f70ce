"""The segments page: every segment with its size, the rule editor, offers, audience CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
from collections.abc import AsyncIterator

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from services.console.backends import BackendError, attempt, call, stream
from services.console.config import (
    ESTIMATE_TIMEOUT_S,
    EXPORT_TIMEOUT_S,
    MAX_QUERY_LENGTH,
    MAX_RULE_LENGTH,
    RULE_CHECK_TIMEOUT_S,
)
from services.console.web import action, audit, console, form_text, refused, render
from vitrine.v1 import segment_pb2

log = logging.getLogger(__name__)

AUDIENCE_HEADER_SAMPLE = 1000  # trait columns come from the first members; later keys go to other_traits


async def segments_page(request: Request) -> Response:
    backends = console(request).clients
    notes: dict[str, str] = {}
    segments: list[segment_pb2.Segment] = []
    offers: list[segment_pb2.Offer] = []
    listed, offered = await asyncio.gather(
        attempt(call("segmentation", backends.segments.ListSegments,
                     segment_pb2.ListSegmentsRequest(include_builtin=True))),
        attempt(call("segmentation", backends.segments.ListOffers, segment_pb2.ListOffersRequest())))
    if isinstance(listed, BackendError):
        notes["segments"] = str(listed)
    else:
        segments = list(listed.segments)
    if isinstance(offered, BackendError):
        notes["offers"] = str(offered)
    else:
        offers = list(offered.offers)
    editing = request.query_params.get("edit", "")
    draft = next((s for s in segments if s.segment_id == editing and not s.builtin), None)
    return render(request, "segments.html", active="segments", segments=segments, offers=offers, notes=notes,
                  draft=draft, flash=request.query_params.get("done", ""))


def _size_text(reply: segment_pb2.EstimateSizeResponse) -> tuple[str, float]:
    share = reply.matching / reply.total if reply.total else 0.0
    return f"{reply.matching:,} of {reply.total:,}", share


async def segment_size(request: Request) -> Response:
    """An htmx fragment: the size of one stored or built-in segment."""
    segment_id = request.query_params.get("id", "")[:MAX_QUERY_LENGTH]
    try:
        reply = await call("segmentation", console(request).clients.segments.EstimateSize,
                           segment_pb2.EstimateSizeRequest(segment_id=segment_id), deadline_s=ESTIMATE_TIMEOUT_S)
    except BackendError as err:
        return render(request, "fragments/size.html", error=str(err))
    text, share = _size_text(reply)
    return render(request, "fragments/size.html", text=text, share=share)


@action
async def check_rule(request: Request, form: FormData) -> Response:
    """An htmx fragment while a rule is typed: the parse error at its position, or the size."""
    rule = form_text(form, "rule", MAX_RULE_LENGTH)
    if not rule:
        return HTMLResponse("")
    backends = console(request).clients
    try:
        checked = await call("segmentation", backends.segments.ValidateRule,
                             segment_pb2.ValidateRuleRequest(rule=rule), deadline_s=RULE_CHECK_TIMEOUT_S)
    except BackendError as err:
        return render(request, "fragments/rule_check.html", backend_error=str(err))
    if not checked.valid:
        lines = rule.splitlines() or [""]
        line = lines[min(max(checked.line, 1), len(lines)) - 1]
        return render(request, "fragments/rule_check.html", invalid=checked, line_text=line,
                      caret=" " * max(checked.column - 1, 0) + "^")
    try:
        size = await call("segmentation", backends.segments.EstimateSize,
                          segment_pb2.EstimateSizeRequest(rule=rule), deadline_s=RULE_CHECK_TIMEOUT_S)
    except BackendError as err:
        return render(request, "fragments/rule_check.html", valid=checked, size_error=str(err))
    text, share = _size_text(size)
    return render(request, "fragments/rule_check.html", valid=checked, text=text, share=share)


@action
async def save_segment(request: Request, form: FormData) -> Response:
    segment = segment_pb2.Segment(
        segment_id=form_text(form, "segment_id", MAX_QUERY_LENGTH), name=form_text(form, "name", 200),
        description=form_text(form, "description", 1000), rule=form_text(form, "rule", MAX_RULE_LENGTH))
    priority = form_text(form, "priority", 12, "0")
    segment.priority = int(priority) if priority.lstrip("-").isdigit() else 0
    state = console(request)
    try:
        await call("segmentation", state.clients.segments.PutSegment, segment_pb2.PutSegmentRequest(segment=segment))
    except BackendError as err:
        return await refused(request, "segment.put", segment.segment_id, err,
                             status_code=400 if not err.unavailable else 503, title="Segment not saved",
                             back="/segments", rule=segment.rule)
    await audit(request, "segment.put", segment.segment_id, rule=segment.rule, name=segment.name,
                priority=segment.priority)
    return RedirectResponse(f"/segments?done=saved+{segment.segment_id}", status_code=303)


@action
async def delete_segment(request: Request, form: FormData) -> Response:
    segment_id = form_text(form, "segment_id", MAX_QUERY_LENGTH)
    state = console(request)
    try:
        reply = await call("segmentation", state.clients.segments.DeleteSegment,
                           segment_pb2.DeleteSegmentRequest(segment_id=segment_id))
    except BackendError as err:
        return await refused(request, "segment.delete", segment_id, err,
                             status_code=400 if not err.unavailable else 503, title="Segment not deleted",
                             back="/segments")
    await audit(request, "segment.delete", segment_id, ok=reply.deleted)
    return RedirectResponse(f"/segments?done=deleted+{segment_id}", status_code=303)


def _csv_line(row: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(row)
    return buffer.getvalue()


async def audience_csv(members: AsyncIterator[segment_pb2.AudienceMember]) -> AsyncIterator[str]:
    """CSV of an audience: user_id, customer_id, one column per trait seen among the first
    members, and other_traits (JSON) for trait keys that only appear later."""
    sample: list[segment_pb2.AudienceMember] = []
    async for member in members:
        sample.append(member)
        if len(sample) >= AUDIENCE_HEADER_SAMPLE:
            break
    keys = sorted({key for member in sample for key in member.traits})

    def row(member: segment_pb2.AudienceMember) -> str:
        other = {k: v for k, v in member.traits.items() if k not in keys}
        return _csv_line([member.user_id, member.customer_id, *(member.traits.get(k, "") for k in keys),
                          json.dumps(other, sort_keys=True) if other else ""])

    yield _csv_line(["user_id", "customer_id", *keys, "other_traits"])
    for member in sample:
        yield row(member)
    if len(sample) >= AUDIENCE_HEADER_SAMPLE:
        async for member in members:
            yield row(member)


@action
async def export_audience(request: Request, form: FormData) -> Response:
    # The rule editor's export button sends the typed rule (and maybe a segment id being edited).
    segment_id = "" if form.get("export_rule") == "1" else form_text(form, "segment_id", MAX_QUERY_LENGTH)
    rule = form_text(form, "rule", MAX_RULE_LENGTH)
    consent = form.get("require_marketing_consent") == "on"
    exported = segment_pb2.ExportAudienceRequest(require_marketing_consent=consent)
    if segment_id:
        exported.segment_id = segment_id
    elif rule:
        exported.rule = rule
    else:
        return render(request, "error.html", status_code=400, title="No audience",
                      message="Name a segment or type a rule to export.", back="/segments")
    state = console(request)
    members = stream("segmentation", state.clients.segments.ExportAudience, exported, EXPORT_TIMEOUT_S)
    # The first member (or the error) before the answer starts: a refused export is a page, not a broken file.
    try:
        first = await anext(members, None)
    except BackendError as err:
        return await refused(request, "audience.export", segment_id or rule, err,
                             status_code=400 if not err.unavailable else 503, title="Audience not exported",
                             back="/segments")
    await audit(request, "audience.export", segment_id or rule, kind="segment" if segment_id else "rule",
                require_marketing_consent=consent)

    async def all_members() -> AsyncIterator[segment_pb2.AudienceMember]:
        if first is not None:
            yield first
        async for member in members:
            yield member

    async def body() -> AsyncIterator[str]:
        started, rows = time.monotonic(), 0
        try:
            async for chunk in audience_csv(all_members()):
                rows += 1
                yield chunk
        except BackendError as err:
            # Mid-stream failure: the download ends with a marker line rather than silently short.
            log.warning("audience export cut: %s", err)
            yield _csv_line([f"# export incomplete: {err}"])
        log.info("audience exported: %d rows in %.1fs", rows - 1, time.monotonic() - started)

    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in (segment_id or "rule"))[:64]
    return StreamingResponse(body(), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": f'attachment; filename="audience-{name}.csv"'})


routes = [
    Route("/segments", segments_page),
    Route("/segments/size", segment_size),
    Route("/segments/check", check_rule, methods=["POST"]),
    Route("/segments/save", save_segment, methods=["POST"]),
    Route("/segments/delete", delete_segment, methods=["POST"]),
    Route("/segments/audience.csv", export_audience, methods=["POST"]),
]
