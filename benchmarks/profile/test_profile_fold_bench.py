"""Micro-benchmarks of the profile write and read path without gRPC (pytest-benchmark).

    .venv/bin/python -m pytest benchmarks/profile -q --benchmark-only
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.profile.load import make_events
from services.profile import fold
from services.profile.rfm import RfmSketch
from services.profile.store import LmdbProfileStore
from services.profile.validation import validate_event

NOW = int(time.time() * 1000)
EVENTS = make_events(2_000, 200, "bench", NOW, 1)
for _event in EVENTS:
    validate_event(_event, NOW, 400)


def test_fold_2000_events_into_200_profiles(benchmark) -> None:  # type: ignore[no-untyped-def]
    def run() -> None:
        states: dict[str, object] = {}
        for event in EVENTS:
            state = states.get(event.user_id)
            if state is None:
                state = states[event.user_id] = fold.new_state(event.user_id)
            fold.apply_event(state, event)  # type: ignore[arg-type]

    benchmark(run)


def test_validate_2000_events(benchmark) -> None:  # type: ignore[no-untyped-def]
    benchmark(lambda: [validate_event(e, NOW, 400) for e in EVENTS])


def test_public_view(benchmark) -> None:  # type: ignore[no-untyped-def]
    state = fold.new_state("u")
    for event in EVENTS[:300]:
        fold.apply_event(state, event)
    sketch = RfmSketch()
    sketch.commit(sketch.pending([(None, (NOW // 86_400_000 - i, i + 1, 10.0 * i)) for i in range(100)]))
    benchmark(lambda: fold.public_view(state, NOW, sketch.score))


def test_store_apply_2000_events_one_transaction(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = LmdbProfileStore(tmp_path, map_size_mb=1024, sync=False)
    rounds = iter(range(10**6))

    def run() -> None:
        i = next(rounds)
        for event in EVENTS:
            event.event_id = f"{i}-{event.event_id.split('-', 1)[-1]}"
        store.apply_events(EVENTS, NOW)

    try:
        benchmark.pedantic(run, rounds=5, iterations=1)
    finally:
        store.close()
