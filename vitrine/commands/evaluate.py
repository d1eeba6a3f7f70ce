"""`vitrine evaluate`: offline evaluation of the recommendation strategies on held-out sessions.

    vitrine evaluate --dataset tmall [--data DIR] [--limit N] [--out DIR]
    vitrine evaluate --dataset demo [--limit N] [--out DIR]

Starts the real recommendation service in-process (port 0, temporary data directory), trains
it with the `Train` RPC, observes the training clicks, asks `Recommend` for every test case and
strategy over a real channel, and prints HR/MRR/NDCG@10/20 and coverage per strategy. Writes
`<out>/<dataset>.md` and `<out>/<dataset>.png` (default out: benchmarks/evaluation).

Reference rows computed from the same data without the service, marked "(scoring level)":
popularity by training click counts (the protocol's floor) and the session-kNN score of
`scoring.session_knn` (what FOR_YOU is proposed to merge in), item-kNN (the session neighbours of
the newest item alone) and, for the Rank protocol, the 100 candidates in popularity order.
FOR_YOU_FIRST_STAGE / RANK / RANK_FIRST_STAGE: see `vitrine.evaluation.runner`. A second table
repeats every row over the cases whose next item is not a re-view.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

NAME = "evaluate"
HELP = "offline evaluation (HR/MRR/NDCG@10/20, coverage) of each strategy on held-out sessions"
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "benchmarks" / "evaluation"
STRATEGIES = ("FOR_YOU", "FOR_YOU_FIRST_STAGE", "RANK", "RANK_FIRST_STAGE", "TRENDING", "SIMILAR",
              "RECENTLY_VIEWED")
# Published HR@20 / MRR@20 (%) on the same Tmall files (../shared/data/README.md; SR-GNN and
# GCE-GNN as reported in Wang et al., SIGIR 2020).
TMALL_PUBLISHED = (
    ("popularity (training click counts)", 1.97, 0.90),
    ("item-kNN, last item", 8.95, 3.20),
    ("item-kNN, last 10 items, 1/position", 15.31, 4.28),
    ("V-SKNN (k=100, every 5th case)", 20.27, 10.56),
    ("SR-GNN", 27.57, 13.72),
    ("GCE-GNN", 33.42, 15.42),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=("tmall", "demo"), required=True)
    parser.add_argument("--data", type=Path, default=None,
                        help="shared data directory holding tmall/ (default $VITRINE_SHARED_DATA or ../shared/data)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate a seeded sample of N test cases (0 = all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where <dataset>.md and <dataset>.png go")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated strategies")
    parser.add_argument("--concurrency", type=int, default=16, help="Recommend calls in flight")
    parser.add_argument("--dimensions", type=int, default=0, help="vector dimensions for Train (0 = service default)")
    parser.add_argument("--for-you", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of the service's ForYouParams (e.g. exclude_recent=false); repeatable")
    parser.add_argument("--no-reference", action="store_true", help="skip the scoring-level reference rows")
    parser.add_argument("--affinity-decay", type=float, default=None, metavar="D",
                        help="demo: send category_affinity built from the prefix (decay D per view) with "
                             "FOR_YOU and TRENDING")
    parser.add_argument("--no-catalog", action="store_true", help="demo: do not upsert the demo catalog first")
    parser.add_argument("--tag", default="", help="suffix of the output file names (<dataset><tag>.md)")


def _parse_value(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _reference_rows(dataset: Any) -> dict[str, Any]:
    import numpy as np

    from scoring import session_knn
    from vitrine.evaluation.datasets import index_items
    from vitrine.evaluation.metrics import score_lists

    ids, train, test = index_items(dataset)
    n = len(ids)
    back = np.array(list(ids), dtype=object)
    targets = [c.next for c in dataset.test]
    counts = np.bincount(np.concatenate(train), minlength=n) if train else np.zeros(n, np.int64)
    pop = np.argsort(-counts, kind="stable")[:20]
    rows = {"popularity, train counts (scoring level)": score_lists([list(back[pop])] * len(test), targets, n,
                                                                     pad="")}
    neighbours = session_knn.build_neighbours(train, n)
    idx, _ = session_knn.session_topk(neighbours, [p for p, _ in test], 20)
    lists = []
    for row in idx:
        got = [back[i] for i in row if i >= 0]
        seen = set(got)
        got += [back[i] for i in pop if back[i] not in seen][: 20 - len(got)]
        lists.append(got)
    rows["session-kNN + re-views (scoring level)"] = score_lists(lists, targets, n, pad="")
    idx, _ = session_knn.session_topk(neighbours, [p for p, _ in test], 20, n_recent=1, repeat_weight=0.0)
    rows["item-kNN, last item's session neighbours (scoring level)"] = score_lists(
        [[back[i] for i in row if i >= 0] for row in idx], targets, n, pad="")
    from vitrine.evaluation.rank_protocol import candidate_lists, popularity_order

    rows["RANK protocol: popularity order (scoring level)"] = score_lists(
        popularity_order(dataset, candidate_lists(dataset)), targets, n, pad="")
    return rows


def run(args: argparse.Namespace) -> int:
    from vitrine.evaluation import report
    from vitrine.evaluation.datasets import load_demo, load_tmall
    from vitrine.evaluation.runner import evaluate

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    if args.dataset == "tmall":
        try:
            dataset = load_tmall(args.data)
        except FileNotFoundError as err:
            print(f"vitrine evaluate: {err}", file=sys.stderr)
            return 2
    else:
        dataset = load_demo(with_catalog=not args.no_catalog)
    full_cases = len(dataset.test)
    dataset = dataset.limited(args.limit or None)
    print(f"{dataset.name}: {len(dataset.train):,} training sessions, {len(dataset.test):,} test cases"
          f"{f' (seeded sample of {full_cases:,})' if len(dataset.test) < full_cases else ''}", file=sys.stderr)
    strategies = [s.strip().upper() for s in args.strategies.split(",") if s.strip()]
    overrides = {}
    for item in args.for_you:
        name, _, value = item.partition("=")
        overrides[name.strip()] = _parse_value(value.strip())
    result = evaluate(dataset, strategies=strategies, concurrency=args.concurrency, dimensions=args.dimensions,
                      for_you=overrides or None, affinity_decay=args.affinity_decay)
    scores = dict(result.scores)
    if not args.no_reference:
        scores.update(_reference_rows(dataset))
    print()
    print(report.text_table(scores))
    tag = args.tag
    title = f"Offline evaluation, {dataset.name}"
    command = "vitrine evaluate " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else [f"--dataset {args.dataset}"])
    intro = [
        f"Command: `{command}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{time.perf_counter() - started:.0f} s.",
        "",
        f"Training sessions: {result.train_sessions:,}; test cases: {result.cases:,}"
        f"{f' (seeded sample of {full_cases:,})' if result.cases < full_cases else ''}; "
        f"items in training: {result.catalog_items:,}.",
        f"Model: `{json.dumps(result.model)}`.",
        "",
        "Rows without a suffix are the real recommendation service (Train, Observe, Recommend over gRPC, "
        "k=20, include_out_of_stock); FOR_YOU gets the prefix as `user.recent_product_ids` (newest first), "
        "SIMILAR the newest prefix item as anchor.",
    ]
    notes = [*result.notes, *(f"{s}: fallback in {100 * f:.1f}% of answers" for s, f in result.fallback_share.items())]
    if dataset.name == "tmall":
        notes.append("published on these files, HR@20 / MRR@20: "
                     + "; ".join(f"{name} {hr:.2f} / {mrr:.2f}" for name, hr, mrr in TMALL_PUBLISHED))
    out: Path = args.out
    write_md = out / f"{dataset.name}{tag}.md"
    report.write_markdown(write_md, title, scores, intro=intro, notes=notes)
    if result.scores_new:
        share = result.scores_new[next(iter(result.scores_new))].cases / max(result.cases, 1)
        with write_md.open("a") as f:
            f.write(f"\n## Next items that are not re-views ({100 * share:.1f}% of the cases)\n\n"
                    + report.markdown_table(result.scores_new) + "\n")
    report.write_plot(out / f"{dataset.name}{tag}.png", title + f" ({result.cases:,} cases)", scores)
    print(f"\nwrote {write_md} and {write_md.with_suffix('.png')}", file=sys.stderr)
    return 0
