"""Print and write evaluation results: a text table, a Markdown file and a PNG plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from vitrine.evaluation.metrics import Scores

COLUMNS = ("HR@10", "HR@20", "MRR@10", "MRR@20", "NDCG@10", "NDCG@20", "Cov@20")


def table_rows(scores: Mapping[str, Scores]) -> list[list[str]]:
    return [[name, *(f"{100 * s.as_row()[c]:.2f}" for c in COLUMNS)] for name, s in scores.items()]


def text_table(scores: Mapping[str, Scores]) -> str:
    header = ["strategy", *COLUMNS]
    rows = table_rows(scores)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                           strict=True)))]
    for r in rows:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(lines)


def markdown_table(scores: Mapping[str, Scores]) -> str:
    header = ["strategy", *COLUMNS]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in table_rows(scores)]
    return "\n".join(out)


def write_markdown(path: Path, title: str, scores: Mapping[str, Scores], *, intro: Sequence[str] = (),
                   notes: Sequence[str] = ()) -> None:
    parts = [f"# {title}", "", *intro, "", "Figures in % (HR, MRR, NDCG over all cases; Cov@20 = share of "
             "the training items that appear in at least one top-20 list).", "", markdown_table(scores), ""]
    if notes:
        parts += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


def write_plot(path: Path, title: str, scores: Mapping[str, Scores]) -> None:
    """Grouped bars: HR@10, HR@20, MRR@10, MRR@20 (in %) per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("HR@10", "HR@20", "MRR@10", "MRR@20")
    names = list(scores)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names) + 2), 4.2))
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(names))]
        ys = [100 * scores[n].as_row()[m] for n in names]
        bars = ax.bar(xs, ys, width, label=m)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
