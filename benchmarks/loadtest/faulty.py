"""The all-in-one process with a backend that fails on SIGUSR1 (for benchmarks/loadtest/modes.py):
the suite starts healthy (warm trending lists, connections), then on the signal one backend
starts to misbehave inside the shared process.

    python -m benchmarks.loadtest.faulty --fault recommendation-raises <all_in_one flags>

Faults:
  recommendation-raises  every Recommend/RecommendBatch/Rank raises inside the recommendation service
  segmentation-hangs     every Evaluate awaits forever (a coroutine that never answers)
  segmentation-blocks    one Evaluate in ten blocks the shared event loop for 50 ms (a synchronous stall)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import time
from typing import Any

from services.common.config import load_config
from services.common.logs import configure_logging
from services.common.server import install_event_loop, wait_for_stop_signal
from services.gateway.all_in_one import AllInOne, AllInOneConfig
from services.gateway.config import DEFAULT_PORT
from services.gateway.inprocess import _UnaryCall

log = logging.getLogger(__name__)

FAULTS = ("recommendation-raises", "segmentation-hangs", "segmentation-blocks")
BLOCK_SHARE = 0.1
BLOCK_S = 0.05


def _apply(suite: AllInOne, fault: str) -> None:
    if fault == "recommendation-raises":
        recommendation = suite.captured["recommendation"].inner

        def crash(*args: object, **kwargs: object) -> Any:
            raise RuntimeError("injected: the recommendation service crashed")

        for method in ("recommend", "recommend_many", "rank"):
            if hasattr(recommendation, method):
                setattr(recommendation, method, crash)
    elif fault == "segmentation-hangs":
        gateway = suite.servers["gateway"].service

        async def never(request: Any, context: Any) -> Any:
            await asyncio.Event().wait()

        gateway.composer.segments.Evaluate = _UnaryCall("Evaluate", never)  # type: ignore[attr-defined]
    else:
        engine = suite.captured["segmentation"].inner.engine
        evaluate = engine.evaluate
        rng = random.Random(5)

        def stalled(*args: Any, **kwargs: Any) -> Any:
            if rng.random() < BLOCK_SHARE:
                time.sleep(BLOCK_S)  # holds the event loop (and the GIL): the whole process waits
            return evaluate(*args, **kwargs)

        engine.evaluate = stalled
    log.warning("fault injected: %s", fault)


async def serve(config: AllInOneConfig, fault: str) -> None:
    suite = AllInOne(config)
    await suite.start()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _apply, suite, fault)
    await wait_for_stop_signal()
    await suite.stop(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=FAULTS, required=True)
    args, rest = parser.parse_known_args(argv)
    config = load_config(AllInOneConfig, "all_in_one", rest, defaults={"port": DEFAULT_PORT})
    configure_logging("all-in-one", config.log_level)
    if config.uvloop:
        install_event_loop()
    asyncio.run(serve(config, args.fault))


if __name__ == "__main__":
    main()
