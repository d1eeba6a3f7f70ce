"""Results of a load run as a Markdown table and a latency-versus-load plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# A step counts as sustained when (almost) everything was answered ...
SUSTAINED_MAX_ERROR_SHARE = 0.01
# ... and as clean when, besides, few Personalize answers were degraded by a late backend.
CLEAN_MAX_DEGRADED_SHARE = 0.05
PERSONALIZE_ANSWERS = "_personalize"
DEGRADED = "_degraded"


def _error_share(step: dict[str, Any]) -> float:
    return step["error_count"] / max(step["requests"], 1)


def degraded_share(step: dict[str, Any]) -> float:
    fallbacks = step.get("fallbacks", {})
    return fallbacks.get(DEGRADED, 0) / max(fallbacks.get(PERSONALIZE_ANSWERS, 0), 1)


def sustained_rps(run: dict[str, Any], *, clean: bool = False) -> float:
    """Best achieved rate over the steps that answered (almost) everything (and, when `clean`,
    with few answers degraded by a backend past its deadline)."""
    rates = [s["achieved_rps"] for s in run["steps"] if _error_share(s) <= SUSTAINED_MAX_ERROR_SHARE
             and (not clean or degraded_share(s) <= CLEAN_MAX_DEGRADED_SHARE)]
    return max(rates, default=0.0)


def p99_at(run: dict[str, Any], offered: float) -> float | None:
    for step in run["steps"]:
        if step["offered_rps"] == offered:
            return float(step["p99_ms"])
    return None


def summary(vitrine: dict[str, Any], echo: dict[str, Any]) -> dict[str, Any]:
    ceiling = sustained_rps(echo)
    best = sustained_rps(vitrine)
    clean = sustained_rps(vitrine, clean=True)
    return {
        "echo_ceiling_rps": ceiling,
        "vitrine_sustained_rps": best,
        "ratio_to_echo": best / ceiling if ceiling else 0.0,
        "vitrine_clean_rps": clean,
        "clean_ratio_to_echo": clean / ceiling if ceiling else 0.0,
        "p99_ms_at_1000": p99_at(vitrine, 1000.0),
    }


def _fmt_fallbacks(step: dict[str, Any]) -> str:
    answered = max(step.get("fallbacks", {}).get(PERSONALIZE_ANSWERS, 0), 1)
    items = sorted(((k, v) for k, v in step.get("fallbacks", {}).items() if not k.startswith("_")),
                   key=lambda kv: -kv[1])
    return ", ".join(f"{k} {100.0 * v / answered:.1f}%" for k, v in items) or "-"


def table(run: dict[str, Any]) -> str:
    lines = [
        "| offered/s | achieved/s | p50 ms | p95 ms | p99 ms | max ms | errors | degraded | fallback reasons "
        "(share of Personalize answers) | send lag p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in run["steps"]:
        errors = s["error_count"]
        detail = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items()))
        lines.append(
            f"| {s['offered_rps']:.0f} | {s['achieved_rps']:.0f} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {s['max_ms']:.1f} | {errors}{f' ({detail})' if errors else ''} | "
            f"{100.0 * degraded_share(s):.1f}% | {_fmt_fallbacks(s)} | {s['send_lag_p99_ms']:.2f} |")
    return "\n".join(lines)


def cpu_table(run: dict[str, Any]) -> str:
    """CPU milliseconds per request answered, per process and step (and cores busy in total)."""
    steps = [s for s in run["steps"] if s.get("cpu_ms_per_request")]
    if not steps:
        return "(no CPU figures: not on Linux, or no process ids)"
    names = sorted({k for s in steps for k in s["cpu_ms_per_request"]})
    lines = ["| offered/s | " + " | ".join(f"{n} ms" for n in names) + " | all ms | cores busy |",
             "|---:|" + "---:|" * (len(names) + 2)]
    for s in steps:
        per = s["cpu_ms_per_request"]
        lines.append(f"| {s['offered_rps']:.0f} | " + " | ".join(f"{per.get(n, 0.0):.3f}" for n in names)
                     + f" | {sum(per.values()):.3f} | {sum(s['cores'].values()):.2f} |")
    return "\n".join(lines)


def markdown(vitrine: dict[str, Any], echo: dict[str, Any], meta: dict[str, Any]) -> str:
    numbers = summary(vitrine, echo)
    p99 = numbers["p99_ms_at_1000"]
    out = [
        "# Gateway load test",
        "",
        f"- when: {meta.get('when', '?')}; machine: {meta.get('machine', '?')}",
        f"- store: {meta.get('store', '?')}",
        f"- suite: {meta.get('suite', '?')}",
        *([f"- load: {meta['load']}"] if meta.get("load") else []),
        f"- mix: 80 % Personalize (2 placements), 20 % Track; open loop, {vitrine['step_seconds']:.0f} s per step; "
        "latency from each request's scheduled send time; 'degraded' = Personalize answers with a fallback "
        "other than unknown_user (a backend missed its share of the 50 ms budget)",
        "",
        "## Summary",
        "",
        f"- echo ceiling (bare grpc.aio echo, same generator): **{numbers['echo_ceiling_rps']:.0f} req/s**",
        f"- gateway sustained (≤ 1 % errors): **{numbers['vitrine_sustained_rps']:.0f} req/s** = "
        f"**{numbers['ratio_to_echo']:.2f} x echo** (goal ≥ 0.3)",
        f"- gateway clean (≤ 1 % errors and ≤ 5 % of Personalize answers degraded by a late backend): "
        f"**{numbers['vitrine_clean_rps']:.0f} req/s** = **{numbers['clean_ratio_to_echo']:.2f} x echo**",
        f"- p99 at 1,000 req/s offered: **{p99:.2f} ms** (goal ≤ 10 ms)" if p99 is not None
        else "- p99 at 1,000 req/s: step not run",
        "",
        "## Gateway (Personalize + Track)",
        "",
        table(vitrine),
        "",
        "## Echo ceiling",
        "",
        table(echo),
        "",
        "## CPU per request (ms of CPU per request sent, per process; /proc/<pid>/stat over each step)",
        "",
        "Gateway run (the mix: 80 % Personalize, 20 % Track):",
        "",
        cpu_table(vitrine),
        "",
        "Echo run:",
        "",
        cpu_table(echo),
        "",
    ]
    if meta.get("notes"):
        out += ["## Notes", "", *[f"- {n}" for n in meta["notes"]], ""]
    return "\n".join(out)


def plot(vitrine: dict[str, Any], echo: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run, colour in ((vitrine, "tab:blue"), (echo, "tab:grey")):
        name = "gateway" if run["mode"] == "vitrine" else "echo"
        x = [s["offered_rps"] for s in run["steps"]]
        left.plot(x, [max(s["p50_ms"], 0.01) for s in run["steps"]], "o--", color=colour, label=f"{name} p50")
        left.plot(x, [max(s["p99_ms"], 0.01) for s in run["steps"]], "o-", color=colour, label=f"{name} p99")
        right.plot(x, [s["achieved_rps"] for s in run["steps"]], "o-", color=colour, label=name)
    left.axhline(10, color="tab:red", linewidth=0.8, linestyle=":", label="10 ms goal")
    left.set(xlabel="offered load (req/s)", ylabel="latency (ms, log)", yscale="log", title="Latency vs load")
    top = max(s["offered_rps"] for r in (vitrine, echo) for s in r["steps"])
    right.plot([0, top], [0, top], color="black", linewidth=0.6, linestyle=":", label="offered")
    right.set(xlabel="offered load (req/s)", ylabel="achieved (req/s)", title="Throughput")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
