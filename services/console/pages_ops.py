"""Catalog, journeys, experiments and the audit log: read-only pages."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.console.backends import BackendError, Backends, attempt, call
from services.console.config import AUDIT_PAGE_LINES, RESULTS_TIMEOUT_S, TRENDING_ITEMS, TRENDING_OOS_SCAN
from services.console.web import console, render
from vitrine.v1 import journey_pb2, recommend_pb2, segment_pb2


async def catalog_page(request: Request) -> Response:
    backends = console(request).clients
    notes: dict[str, str] = {}
    info, trending, popular = await asyncio.gather(
        attempt(call("recommendation", backends.recommend.GetModelInfo, recommend_pb2.GetModelInfoRequest())),
        attempt(call("recommendation", backends.recommend.Recommend, recommend_pb2.RecommendRequest(
            strategy=recommend_pb2.TRENDING, k=TRENDING_ITEMS))),
        # Trending with out-of-stock items allowed: the popular products that cannot be sold now.
        attempt(call("recommendation", backends.recommend.Recommend, recommend_pb2.RecommendRequest(
            strategy=recommend_pb2.TRENDING, k=TRENDING_OOS_SCAN,
            constraints=recommend_pb2.Constraints(include_out_of_stock=True)))))
    for name, value in (("model", info), ("trending", trending), ("out of stock", popular)):
        if isinstance(value, BackendError):
            notes[name] = str(value)
    out_of_stock = [] if isinstance(popular, BackendError) else [i for i in popular.items if i.stock <= 0]
    return render(request, "catalog.html", active="catalog", notes=notes,
                  info=None if isinstance(info, BackendError) else info,
                  trending=None if isinstance(trending, BackendError) else trending,
                  out_of_stock=out_of_stock)


@dataclasses.dataclass
class Row:
    item: Any
    result: Any = None
    error: str = ""


async def _with_results(items: list[Any], fetch: Any) -> list[Row]:
    rows = [Row(item) for item in items]

    async def one(row: Row) -> None:
        try:
            row.result = await fetch(row.item)
        except BackendError as err:
            row.error = str(err)

    await asyncio.gather(*(one(row) for row in rows))
    return rows


async def journeys_page(request: Request) -> Response:
    backends: Backends = console(request).clients
    try:
        listed = await call("journeys", backends.journeys.ListJourneys, journey_pb2.ListJourneysRequest())
    except BackendError as err:
        return render(request, "journeys.html", active="journeys", rows=[], notes={"journeys": str(err)})

    async def stats(journey: journey_pb2.Journey) -> journey_pb2.JourneyStats:
        return await call("journeys", backends.journeys.GetJourneyStats,
                          journey_pb2.GetJourneyStatsRequest(journey_id=journey.journey_id),
                          deadline_s=RESULTS_TIMEOUT_S)

    rows = await _with_results(list(listed.journeys), stats)
    return render(request, "journeys.html", active="journeys", rows=rows, notes={})


def _pct(value: float) -> float | None:
    return round(100 * value, 3) if math.isfinite(value) else None  # NaN (no users) is a gap, not bad JSON


def ci_chart(results: segment_pb2.ExperimentResults) -> dict[str, Any]:
    """Chart.js data for a variant comparison: conversion rate with its 95 % interval (floating bars)."""
    return {
        "labels": [v.variant_id for v in results.variants],
        "rate": [_pct(v.conversion_rate) for v in results.variants],
        "ci": [[_pct(v.conversion_ci_low), _pct(v.conversion_ci_high)] for v in results.variants],
    }


async def experiments_page(request: Request) -> Response:
    backends = console(request).clients
    try:
        listed = await call("segmentation", backends.segments.ListExperiments, segment_pb2.ListExperimentsRequest())
    except BackendError as err:
        return render(request, "experiments.html", active="experiments", rows=[], notes={"experiments": str(err)})

    async def results(experiment: segment_pb2.Experiment) -> segment_pb2.ExperimentResults:
        return await call("segmentation", backends.segments.GetExperimentResults,
                          segment_pb2.GetExperimentResultsRequest(experiment_id=experiment.experiment_id),
                          deadline_s=RESULTS_TIMEOUT_S)

    rows = await _with_results(list(listed.experiments), results)
    charts = {row.item.experiment_id: ci_chart(row.result) for row in rows if row.result is not None}
    return render(request, "experiments.html", active="experiments", rows=rows, charts=charts, notes={})


async def audit_page(request: Request) -> Response:
    entries = await asyncio.to_thread(console(request).audit.tail, AUDIT_PAGE_LINES)
    return render(request, "audit.html", active="audit", entries=entries)


routes = [
    Route("/catalog", catalog_page),
    Route("/journeys", journeys_page),
    Route("/experiments", experiments_page),
    Route("/audit", audit_page),
]
