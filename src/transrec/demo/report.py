"""The demo's results as Markdown and JSON, rendered from the dict of ``demo.summary.summarise`` (or
from a ``results.json`` read back): the main table, the scarcity table, the significance lines and the
conclusions. A cell without a value (a collapsed run, no new-item user) shows as ``—``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from transrec.demo.plots import plot_convergence, plot_scarcity
from transrec.demo.summary import METRIC, comparison_sentence

MISSING = "—"
COLUMNS = (("HR@10", "HR@10"), ("NDCG@10", "NDCG@10"), ("new/HR@10", "new-item HR@10"),
           ("new/NDCG@10", "new-item NDCG@10"))  # fmt: skip


def main_table(summary: dict[str, Any]) -> str:
    """Rows = methods; columns = HR@10 and NDCG@10 over all test users and over the users whose target is a
    new item (mean ± std over seeds), NDCG@10 against NoPT, and the epochs the runs took."""
    users = summary["users"]
    methods = summary["methods"]
    nopt = methods.get("NoPT", {}).get("mean", {}).get(METRIC)
    titles = [title for _, title in COLUMNS]
    lines = [
        f"Test users: all {users['all']}, new-item targets {users['new']}.",
        "",
        "| Method | seeds | " + " | ".join(titles) + f" | {METRIC} vs NoPT | epochs (best / run) |",
        "|---|---|" + "---|" * (len(COLUMNS) + 2),
    ]
    for name, entry in methods.items():
        seeds = len(entry["seeds"])
        row = [_cell(entry["mean"].get(key), entry["std"].get(key), seeds) for key, _ in COLUMNS]
        mean = entry["mean"].get(METRIC)
        change = "" if name == "NoPT" or not nopt or mean is None else _percent((mean - nopt) / nopt)
        lines.append(f"| {name} | {seeds} | " + " | ".join(row) + f" | {change} | {_epochs(entry)} |")
    return "\n".join(lines)


def scarcity_table(summary: dict[str, Any]) -> str:
    """Rows = methods; columns = the share of the target's users trained on; cells = test NDCG@10 over all
    test users, mean ± std over the grid's seeds."""
    grid = summary["scarcity"]
    if not grid:
        return ""
    fractions = list(next(iter(grid.values())))
    lines = ["| Method | " + " | ".join(f"{float(f):.0%} of users" for f in fractions) + " |",
             "|---|" + "---|" * len(fractions)]  # fmt: skip
    for method, points in grid.items():
        row = [_cell(points[f]["mean"], points[f]["std"], len(points[f]["seeds"])) for f in fractions]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    seeds = sorted({s for points in grid.values() for p in points.values() for s in p["seeds"]})
    lines += ["", f"Test {METRIC} on all test users, mean ± std over seeds {seeds}."]
    return "\n".join(lines)


def significance_lines(summary: dict[str, Any]) -> list[str]:
    return [comparison_sentence(c, summary["users"]) for c in summary["significance"]]


def source_line(summary: dict[str, Any]) -> str:
    source = summary.get("source") or {}
    values = [v for v in source.get("test_ndcg10", []) if v is not None]
    if not values:
        return ""
    per_seed = ", ".join(f"seed {s}: {MISSING if v is None else _number(v)}"
                         for s, v in zip(source["seeds"], source["test_ndcg10"], strict=True))  # fmt: skip
    epochs = ", ".join(f"{b}/{r}" for b, r in zip(source["best_epoch"], source["epochs_run"], strict=True))
    return f"Source pre-training (one per seed), own test {METRIC}: {per_seed}; epochs (best/run): {epochs}."


def render(summary: dict[str, Any], context: dict[str, Any]) -> str:
    """The whole ``results.md``."""
    lines = [f"# {context.get('title', 'Transfer demo')}", ""]
    lines += [f"- {key}: {value}" for key, value in context.items() if key != "title"]
    stages = summary.get("stage_seconds") or {}
    if stages:
        lines.append("- stage wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    lines += ["", "## Main table", "", main_table(summary), ""]
    source = source_line(summary)
    if source:
        lines += [source, ""]
    lines += ["## Paired tests (per-user NDCG@10)", ""]
    lines += [f"- {line}" for line in significance_lines(summary)] or ["- none (no pair of runs to compare)"]
    table = scarcity_table(summary)
    if table:
        lines += ["", "## Target scarcity", "", table]
    lines += ["", "## Conclusions", ""]
    lines += [f"- {line}" for line in summary.get("conclusions", [])]
    return "\n".join(lines) + "\n"


def write_results(summary: dict[str, Any], out: Path, context: dict[str, Any],
                  images: Path | None = None) -> dict[str, Path]:  # fmt: skip
    """``results.md``, ``results.json``, ``convergence.png`` and ``scarcity.png`` in ``out`` (the plots when
    matplotlib is installed); with ``images``, the plots are also copied there as ``demo_*.png``. Returns
    the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "results.md", "json": out / "results.json"}
    files["table"].write_text(render(summary, context))
    files["json"].write_text(json.dumps({"context": context, **summary}, indent=2) + "\n")
    for kind, plot in (("convergence", plot_convergence), ("scarcity", plot_scarcity)):
        if plot(summary, out / f"{kind}.png"):
            files[kind] = out / f"{kind}.png"
            if images is not None:
                images.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(files[kind], images / f"demo_{kind}.png")
    return files


def _cell(mean: float | None, std: float | None, seeds: int) -> str:
    if mean is None:
        return MISSING
    return _number(mean) if seeds <= 1 or std is None else f"{_number(mean)} ± {_number(std)}"


def _number(value: float) -> str:
    return f"{value:.4f}"


def _percent(ratio: float) -> str:
    return f"{round(ratio, 6) + 0.0:+.1%}"  # + 0.0 turns a rounding -0.0 into 0.0


def _epochs(entry: dict[str, Any]) -> str:
    pairs = [(b, r) for b, r, stop in zip(entry.get("best_epoch", []), entry.get("epochs_run", []),
                                          entry.get("stop", []), strict=False) if stop]  # fmt: skip
    if not pairs:
        return ""
    return ", ".join(f"{b}/{r}" for b, r in pairs)
