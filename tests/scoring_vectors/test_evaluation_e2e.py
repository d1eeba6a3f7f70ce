"""End to end: the evaluation runner drives the real recommendation service over gRPC."""

from __future__ import annotations

import random

from vitrine.evaluation.datasets import split_sessions
from vitrine.evaluation.report import markdown_table, text_table, write_markdown, write_plot
from vitrine.evaluation.runner import evaluate_async


def synthetic_sessions(n: int = 400, seed: int = 0) -> list[list[str]]:
    """Browsing inside one of 4 clusters of 12 products, with some re-views."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        cluster = rnd.randrange(4)
        items = [f"p{cluster * 12 + rnd.randrange(12)}" for _ in range(rnd.randint(2, 6))]
        out.append(items)
    return out


async def test_evaluation_through_the_real_service(tmp_path) -> None:
    ds = split_sessions(synthetic_sessions(), test_fraction=0.1, name="synthetic").limited(150)
    messages: list[str] = []
    report = await evaluate_async(ds, strategies=("FOR_YOU", "TRENDING", "SIMILAR", "RECENTLY_VIEWED"),
                                  concurrency=8, dimensions=8, progress=messages.append)
    assert report.cases == len(ds.test) and report.model["items"] > 0
    s = report.scores
    assert set(s) == {"FOR_YOU", "TRENDING", "SIMILAR", "RECENTLY_VIEWED"}
    # learned vectors know the clusters; popularity does not (48 items, k=20)
    assert s["FOR_YOU"].hr10 > s["TRENDING"].hr10
    assert s["SIMILAR"].hr10 > s["TRENDING"].hr10
    assert 0 < s["TRENDING"].coverage20 <= 20 / 48 + 1e-9
    assert any("FOR_YOU" in m for m in messages)
    assert "FOR_YOU" in text_table(s) and markdown_table(s).count("\n") == 5
    write_markdown(tmp_path / "r.md", "t", s)
    write_plot(tmp_path / "r.png", "t", s)
    assert (tmp_path / "r.png").stat().st_size > 1000


async def test_for_you_params_can_be_overridden() -> None:
    ds = split_sessions(synthetic_sessions(200, seed=1), test_fraction=0.1).limited(40)
    report = await evaluate_async(ds, strategies=("FOR_YOU",), dimensions=8, progress=lambda m: None,
                                  for_you={"exclude_recent": False})
    assert any("exclude_recent=False" in n for n in report.notes)
