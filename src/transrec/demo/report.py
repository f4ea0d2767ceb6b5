"""The demo's results: a Markdown table in the papers' layout, the same as JSON, convergence plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from transrec.demo.pipeline import MethodRun

COLUMNS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20")


def summarise(runs: list[MethodRun]) -> dict[str, Any]:
    """Mean and standard deviation (over seeds) of every metric per method, and HasPT over NoPT."""
    methods: dict[str, Any] = {}
    for name in dict.fromkeys(run.method for run in runs):
        mine = [run for run in runs if run.method == name]
        methods[name] = {
            "seeds": [run.seed for run in mine],
            "seconds": [round(run.seconds, 1) for run in mine],
            "mean": {k: float(np.mean([run.test[k] for run in mine])) for k in mine[0].test},
            "std": {k: float(np.std([run.test[k] for run in mine])) for k in mine[0].test},
            "per_seed": [run.test for run in mine],
            "valid_ndcg10_per_epoch": [run.valid_curve for run in mine],
        }
    summary: dict[str, Any] = {"methods": methods}
    if "HasPT" in methods and "NoPT" in methods:
        has, no = methods["HasPT"]["mean"], methods["NoPT"]["mean"]
        summary["haspt_over_nopt"] = {k: (has[k] - no[k]) / no[k] if no[k] else None for k in COLUMNS}
    return summary


def markdown_table(summary: dict[str, Any]) -> str:
    """Rows = methods, columns = HR@10, NDCG@10, HR@20, NDCG@20 (mean ± std over seeds) and the relative
    change of NDCG@10 against NoPT; a last row gives HasPT's relative improvement over NoPT per column."""
    methods = summary["methods"]
    nopt = methods.get("NoPT", {}).get("mean", {}).get("NDCG@10")
    header = "| Method | seeds | " + " | ".join(COLUMNS) + " | NDCG@10 vs NoPT |"
    lines = [header, "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for name, entry in methods.items():
        cells = [f"{entry['mean'][c]:.4f} ± {entry['std'][c]:.4f}" for c in COLUMNS]
        change = "" if not nopt or name == "NoPT" else _percent((entry["mean"]["NDCG@10"] - nopt) / nopt)
        lines.append(f"| {name} | {len(entry['seeds'])} | " + " | ".join(cells) + f" | {change} |")
    if "haspt_over_nopt" in summary:
        gains = summary["haspt_over_nopt"]
        cells = ["" if gains[c] is None else _percent(gains[c]) for c in COLUMNS]
        lines.append("| Improv. HasPT over NoPT | | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def _percent(ratio: float) -> str:
    return f"{round(ratio, 6) + 0.0:+.1%}"  # + 0.0 turns a rounding -0.0 into 0.0


def plot_convergence(
    summary: dict[str, Any], path: Path, methods: tuple[str, ...] = ("NoPT", "HasPT")
) -> bool:
    """Validation NDCG@10 per epoch (mean over seeds, band = min..max) of ``methods``; False when
    matplotlib is missing (``pip install transrec[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    for name in methods:
        curves = summary["methods"].get(name, {}).get("valid_ndcg10_per_epoch")
        if not curves:
            continue
        length = max(len(c) for c in curves)
        # Runs that stopped early keep their last value (the best checkpoint is what they report anyway).
        padded = np.array([c + [c[-1]] * (length - len(c)) for c in curves])
        epochs = np.arange(1, length + 1)
        axis.plot(
            epochs,
            padded.mean(0),
            marker="o",
            label=f"{name} (mean of {len(curves)} seed{'s' if len(curves) > 1 else ''})",
        )
        axis.fill_between(epochs, padded.min(0), padded.max(0), alpha=0.2)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation NDCG@10")
    axis.set_title("Target platform: convergence with and without pre-training")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def write_results(summary: dict[str, Any], out: Path, context: dict[str, Any]) -> dict[str, Path]:
    """``results.md``, ``results.json`` and ``convergence.png`` in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "results.md", "json": out / "results.json"}
    lines = [f"# {context.get('title', 'Transfer demo')}", ""]
    lines += [f"- {key}: {value}" for key, value in context.items() if key != "title"]
    lines += ["", markdown_table(summary), ""]
    files["table"].write_text("\n".join(lines))
    files["json"].write_text(json.dumps({"context": context, **summary}, indent=2) + "\n")
    if plot_convergence(summary, out / "convergence.png"):
        files["plot"] = out / "convergence.png"
    return files
