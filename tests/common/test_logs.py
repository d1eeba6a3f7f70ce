"""Structured logs: gRPC's per-call noise about callers that had gone becomes a count per method."""

from __future__ import annotations

import io
import json
import logging

from services.common.logs import configure_logging
from services.common.metrics import ABANDONED_RESPONSES


def _sample(method: str) -> float:
    return ABANDONED_RESPONSES.labels(method)._value.get()  # type: ignore[attr-defined, no-any-return]


def test_abandoned_answers_are_counted_not_logged_as_errors() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("test")
        configure_logging("test")  # twice (a restart in one process): one filter, not two
        out = io.StringIO()
        root.handlers[0].stream = out  # type: ignore[attr-defined]
        grpc_core = logging.getLogger("grpc._cython.cygrpc")
        method = "/vitrine.v1.RecommendService/Recommend"
        before = _sample(method)
        try:
            raise RuntimeError("Failed \"execute_batch\"")
        except RuntimeError:
            grpc_core.exception("ExecuteBatchError raised in core by servicer method [%s]", method)
        grpc_core.error("Unexpected [ValueError] raised by servicer method [/x/Y]")
        assert _sample(method) == before + 1
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [line["msg"] for line in lines] == ["Unexpected [ValueError] raised by servicer method [/x/Y]"]
        assert lines[0]["level"] == "ERROR" and lines[0]["service"] == "test"
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
