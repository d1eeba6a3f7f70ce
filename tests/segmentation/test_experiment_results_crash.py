"""kill -9 while the aggregator folds the feed: after the restart the state is exactly the fold of
the items up to the stored cursor (state and cursor commit together), and resuming from the cursor
ends with every item counted once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from services.segmentation.experiments import ExperimentSet
from services.segmentation.results import ExperimentResults
from tests.segmentation.test_experiment_results import EXP, T0, Feed
from vitrine.v1 import common_pb2 as c
from vitrine.v1 import profile_pb2

N_USERS = 3000


def items() -> list[profile_pb2.LoggedEvent]:
    f = Feed()
    out = []
    for i in range(N_USERS):   # seq 2i+1: exposure, 2i+2: a purchase of 1.0
        out.append(f.exposure(f"u{i}", "control" if i % 2 else "for-you", T0 + i))
        out.append(f.event(f"u{i}", c.PURCHASE, T0 + i + 1, price=1.0, product_id="x", order_id=f"o{i}"))
    return out


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from services.segmentation.experiments import ExperimentSet
    from services.segmentation.results import ExperimentResults
    from tests.segmentation.test_experiment_results import EXP
    from tests.segmentation.test_experiment_results_crash import items
    exps = ExperimentSet([EXP])
    agg = ExperimentResults(Path(sys.argv[1]), lambda: exps)
    feed = items()
    start = agg.cursor()
    print("ready", flush=True)
    for i in range(start, len(feed), 7):
        agg.apply(feed[i:i + 7])
        if i > len(feed) // 3:
            print("third", flush=True)
    print("done", flush=True)
""")


def check(agg: ExperimentResults) -> tuple[int, int]:
    cursor = agg.cursor()
    counts = {v.counts.variant_id: v.counts for v in agg.results(EXP).report.variants}
    users = sum(c.users for c in counts.values())
    converters = sum(c.converters for c in counts.values())
    assert users == (cursor + 1) // 2          # one exposure per odd seq up to the cursor
    assert converters == cursor // 2           # one purchase per even seq up to the cursor
    assert sum(c.revenue for c in counts.values()) == cursor // 2
    return users, converters


def test_kill_9_mid_fold_then_resume(tmp_path: Path) -> None:
    path = tmp_path / "results"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=root, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert child.stdout is not None
    for line in child.stdout:   # wait until a third of the feed is folded, then kill without warning
        if line.strip() in ("third", "done"):
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    exps = ExperimentSet([EXP])
    agg = ExperimentResults(path, lambda: exps)
    try:
        check(agg)
        assert 0 < agg.cursor() <= 2 * N_USERS
        feed = items()
        agg.apply(feed)            # the follower resumes from the cursor: the replayed part is skipped
        assert agg.cursor() == 2 * N_USERS
        assert check(agg) == (N_USERS, N_USERS)
    finally:
        agg.close()
