"""The demo's two plots, from the dict of ``demo.summary.summarise``: each seed's validation curve per
method (convergence), and test NDCG@10 against the share of the target's users (scarcity). matplotlib is
optional (``pip install transrec[plot]``): without it no plot is drawn and each function returns False."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from transrec.utils.packages import pyplot_or_none

logger = logging.getLogger(__name__)

CURVE_METHODS = ("IDRec", "TS", "NoPT", "HasPT")


def plot_convergence(summary: dict[str, Any], path: Path) -> bool:
    """Validation NDCG@10 per epoch on the target (left: each seed thin, the mean over the seeds still
    running bold, a dot at each seed's best epoch) and of the source pre-training (right)."""
    plt = pyplot_or_none("the demo's plots")
    if plt is None:
        return False
    figure, (target, source) = plt.subplots(1, 2, figsize=(10, 4), dpi=120,
                                            gridspec_kw={"width_ratios": [2, 1]})  # fmt: skip
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, name in enumerate(m for m in CURVE_METHODS if m in summary["methods"]):
        entry = summary["methods"][name]
        _curves(target, entry["valid_ndcg10_per_epoch"], entry.get("best_epoch", []), colours[index], name)
    sources = summary.get("source") or {}
    if sources.get("valid_ndcg10_per_epoch"):
        curves, best = sources["valid_ndcg10_per_epoch"], sources.get("best_epoch", [])
        _curves(source, curves, best, colours[-1], "source")
    for axis, title in ((target, "Target platform"), (source, "Source pre-training")):
        axis.set_xlabel("epoch")
        axis.set_ylabel("validation NDCG@10")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def _curves(axis, curves: list[list[float]], best: list[int], colour: str, name: str) -> None:
    curves = [c for c in curves if c]
    if not curves:
        return
    length = max(len(c) for c in curves)
    padded = np.full((len(curves), length), np.nan)
    for row, curve in enumerate(curves):
        padded[row, : len(curve)] = curve
        axis.plot(np.arange(1, len(curve) + 1), curve, color=colour, alpha=0.3, linewidth=1)
    for curve, epoch in zip(curves, best, strict=False):
        if 1 <= epoch <= len(curve):
            axis.plot([epoch], [curve[epoch - 1]], "o", color=colour, markersize=3)
    mean = np.nanmean(padded, axis=0)  # over the seeds still running at each epoch
    axis.plot(np.arange(1, length + 1), mean, color=colour, linewidth=2,
              label=f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")  # fmt: skip


def plot_scarcity(summary: dict[str, Any], path: Path) -> bool:
    """Test NDCG@10 (all test users) against the share of the target's users trained on: the mean over
    seeds as a line, the min..max of the seeds as a band, each seed as a dot. False when there is no grid
    with two points or more, or no matplotlib."""
    grid = summary.get("scarcity") or {}
    if not any(sum(p["mean"] is not None for p in points.values()) >= 2 for points in grid.values()):
        return False
    plt = pyplot_or_none("the demo's plots")
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    seeds = set()
    for method, points in grid.items():
        known = sorted((float(f), p) for f, p in points.items() if p["mean"] is not None)
        if not known:
            continue
        x = np.array([f for f, _ in known])
        line = axis.plot(x, [p["mean"] for _, p in known], marker="o", label=method)[0]
        axis.fill_between(x, [p["min"] for _, p in known], [p["max"] for _, p in known], alpha=0.2,
                          color=line.get_color())  # fmt: skip
        for fraction, point in known:
            dots = point["per_seed"]
            axis.plot([fraction] * len(dots), dots, ".", color=line.get_color(), alpha=0.6)
            seeds.update(point["seeds"])
    fractions = sorted({float(f) for points in grid.values() for f in points})
    axis.set_xscale("log")
    axis.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
    axis.minorticks_off()
    axis.set_xlabel("share of the target platform's users trained on")
    axis.set_ylabel("test NDCG@10 (all test users)")
    axis.set_title(f"Target scarcity: mean, band = min..max over {len(seeds)} seed(s)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
