"""Evaluate through a real in-process gRPC server (informational: the goal is for the engine).

    .venv/bin/python -m pytest benchmarks/segmentation/test_segmentation_grpc.py --benchmark-only -s

Sequential unary calls over one channel, 100 store rules, typical shopper; client and server
share one event loop and core, so this is an upper bound on what the gateway sees locally.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

import grpc
import numpy as np

from benchmarks.segmentation.workload import NOW, offers, store_rules, typical_shopper
from services.common.server import build_server
from services.segmentation.app import build_service
from services.segmentation.config import SegmentationConfig
from vitrine.v1 import segment_pb2, segment_pb2_grpc

CALLS = 3000


async def _run() -> np.ndarray:
    with tempfile.TemporaryDirectory() as data_dir:
        config = SegmentationConfig(port=0, data_dir=data_dir, profile_addresses="")
        running = await build_server(config, build_service(config))
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                stub = segment_pb2_grpc.SegmentServiceStub(channel)
                for segment in store_rules(100):
                    await stub.PutSegment(segment_pb2.PutSegmentRequest(segment=segment), timeout=5)
                for offer in offers(50):
                    await stub.PutOffer(segment_pb2.PutOfferRequest(offer=offer), timeout=5)
                profile, context = typical_shopper()
                request = segment_pb2.EvaluateRequest(profile=profile, context=context, now_ms=NOW)
                for _ in range(200):
                    await stub.Evaluate(request, timeout=5)
                samples = np.empty(CALLS)
                for i in range(CALLS):
                    t0 = time.perf_counter()
                    await stub.Evaluate(request, timeout=5)
                    samples[i] = time.perf_counter() - t0
                return samples * 1e6
        finally:
            await running.stop(0)


def test_evaluate_over_grpc(benchmark) -> None:  # type: ignore[no-untyped-def]
    samples = benchmark.pedantic(lambda: asyncio.run(_run()), rounds=1, iterations=1)
    p50, p99 = np.percentile(samples, [50, 99])
    benchmark.extra_info.update({"calls": CALLS, "p50_us": round(p50, 1), "p99_us": round(p99, 1)})
    print(f"\nEvaluate over gRPC (in-process server, typical shopper): p50 {p50:.0f} us, p99 {p99:.0f} us")
