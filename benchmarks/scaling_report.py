"""The report of ``bench_scaling.py``: fitted log-log slopes, the flags, a Markdown table and the plot.

A point is ``{"axis", "size", "n_users", "n_items", "stage", "status", "seconds", "peak_mb", ...}``
(``status``: ``ok``, ``over-cap``, ``failed`` or ``skipped``), as ``bench_scaling.sweep`` stores it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from transrec.utils.packages import import_optional

STAGES = ("prepare", "idrec-epoch", "morec-cache", "morec-epoch", "minilm-cache", "minilm-epoch", "evaluate")
#: the process whose peak memory a stage's point carries (the last stage a process measures).
MEMORY = {"prepare": "prepare", "idrec-epoch": "idrec", "morec-epoch": "morec", "minilm-epoch": "minilm",
          "evaluate": "evaluate"}  # fmt: skip
#: (stage, axis) -> the slope of the work the stage does in log(work) vs log(size), and why. ``None``:
#: the slope of a work count the stage measured (``distinct_items_per_step`` times ``steps``).
EXPECTED_SLOPE: dict[tuple[str, str], tuple[float | None, str]] = {
    ("prepare", "users"): (1.0, "interactions grow with users"),
    ("prepare", "items"): (1.0, "interactions fixed, the item table (texts tokenised) grows with items"),
    ("idrec-epoch", "users"): (1.0, "one sequence per user"),
    ("idrec-epoch", "items"): (
        1.0,
        "steps fixed; the dense gradient and AdamW update of the n_items x d "
        "embedding table at every step grow with items",
    ),
    ("morec-cache", "users"): (0.0, "the cache encodes each item once"),
    ("morec-cache", "items"): (1.0, "each item once"),
    ("morec-epoch", "users"): (1.0, "one sequence per user"),
    ("morec-epoch", "items"): (None, "steps fixed; a step encodes the batch's distinct items"),
    ("minilm-cache", "users"): (0.0, "the cache encodes each item once"),
    ("minilm-cache", "items"): (1.0, "each item once"),
    ("minilm-epoch", "users"): (1.0, "one sequence per user"),
    ("minilm-epoch", "items"): (None, "steps fixed; a step encodes the batch's distinct items"),
    ("evaluate", "users"): (1.0, "users x a fixed catalogue"),
    ("evaluate", "items"): (1.0, "a fixed user count x items"),
}
#: memory should never grow faster than the data it holds (evaluation ranks in chunks, never users x items)
EXPECTED_MEMORY_SLOPE = 1.0
#: times shorter than this are left out of the fits: start-up costs and the shared machine's noise
MIN_SECONDS = 0.5
#: a fitted slope this much above the work's slope is flagged (timings on a shared machine are noisy)
TOLERANCE = 0.2
#: the slope of the last two points is flagged this much above it (super-linearity that appears at scale)
LAST_SEGMENT_TOLERANCE = 0.35


def fit_slope(sizes: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(size); None with fewer than two distinct sizes."""
    if len(set(sizes)) < 2:
        return None
    x, y = np.log(np.asarray(sizes, dtype=float)), np.log(np.asarray(values, dtype=float))
    return float(np.polyfit(x, y, 1)[0])


def _series(
    points: list[dict[str, Any]], stage: str, axis: str, key: str = "seconds"
) -> list[dict[str, Any]]:
    rows = [
        p for p in points if p["stage"] == stage and p["axis"] == axis and p["status"] == "ok" and key in p
    ]
    return sorted(rows, key=lambda p: p["size"])


def slopes(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (measure, stage, axis) with two or more measured points: the fitted slope, the slope of the last
    two points, the work's slope and whether (and why) it is flagged. Measures: the process's CPU seconds
    (its own work: flagged), wall seconds (what a user waits, other processes included: not flagged) and
    the memory a stage added (flagged). Times under ``MIN_SECONDS`` are left out of the fits."""
    out = []
    for measure, key in (("cpu seconds", "cpu_seconds"), ("wall seconds", "seconds")):
        for stage in STAGES:
            for axis in ("users", "items"):
                rows = [r for r in _series(points, stage, axis, key) if r[key] >= MIN_SECONDS]
                if len(rows) < 2:
                    continue
                sizes, values = [r["size"] for r in rows], [r[key] for r in rows]
                expected, why = EXPECTED_SLOPE[(stage, axis)]
                if expected is None:  # the work counted by the stage itself: steps x distinct items per step
                    expected = fit_slope(sizes, [r["steps"] * r["distinct_items_per_step"] for r in rows])
                    why += f" (measured: {rows[0]['distinct_items_per_step']:.0f} -> "
                    why += f"{rows[-1]['distinct_items_per_step']:.0f} per step)"
                row = _slope_row(measure, stage, axis, sizes, values, expected, why)
                out.append(row if key == "cpu_seconds" else {**row, "flag": ""})
    for stage, process in MEMORY.items():
        for axis in ("users", "items"):
            rows = _series(points, stage, axis, "added_mb")
            if len(rows) < 2:
                continue
            sizes = [r["size"] for r in rows]
            added = [max(r["added_mb"], 1.0) for r in rows]  # MiB the stage added to the imported process
            why = "no more than the data held"
            out.append(_slope_row("peak memory", process, axis, sizes, added, EXPECTED_MEMORY_SLOPE, why))
    return out


def _slope_row(measure, stage, axis, sizes, values, expected, why) -> dict[str, Any]:
    fitted, last = fit_slope(sizes, values), fit_slope(sizes[-2:], values[-2:])
    flags = []
    if fitted > expected + TOLERANCE:
        flags.append(f"fitted slope {fitted:.2f} > {expected:.2f} + {TOLERANCE}")
    if last > expected + LAST_SEGMENT_TOLERANCE:
        flags.append(f"last segment {last:.2f} > {expected:.2f} + {LAST_SEGMENT_TOLERANCE}")
    return {"measure": measure, "stage": stage, "axis": axis, "sizes": sizes, "fitted": fitted, "last": last,
            "expected": expected, "why": why, "flag": "; ".join(flags)}  # fmt: skip


def _cell(point: dict[str, Any] | None, key: str, fmt: str) -> str:
    if point is None:
        return ""
    if point["status"] == "ok" and key in point:
        return format(point[key], fmt)
    if point["status"] == "over-cap":
        return f"> {point['cap']:.0f} (cap)"
    return point["status"]


def _time_cell(point: dict[str, Any] | None) -> str:
    if point is not None and point["status"] == "ok" and "cpu_seconds" in point:
        approx = "~" if point.get("extrapolated") else ""  # timed over the first steps of the epoch
        return f"{approx}{point['seconds']:.2f} ({approx}{point['cpu_seconds']:.2f})"
    return _cell(point, "seconds", ".2f")


def _memory_cell(point: dict[str, Any] | None) -> str:
    if point is not None and point["status"] == "ok" and "added_mb" in point:
        return f"{point['peak_mb']:.0f} (+{point['added_mb']:.0f})"
    return _cell(point, "peak_mb", ".0f")


def markdown(points: list[dict[str, Any]], plot: Path | None = None) -> str:
    """The time table, the memory table and the slope table, in Markdown."""
    stages = [s for s in STAGES if any(p["stage"] == s for p in points)]
    index = {(p["axis"], p["size"], p["stage"]): p for p in points}
    keys = sorted({(p["axis"], p["size"]) for p in points}, key=lambda k: (k[0] != "users", k[1]))
    lines = ["Seconds per stage, wall (CPU of the process), one process each:", "",
             "| axis | size | users | items | interactions | " + " | ".join(stages) + " | load |",
             "|---" * (6 + len(stages)) + "|"]  # fmt: skip
    for axis, size in keys:
        row = [index.get((axis, size, s)) for s in stages]
        first = next(p for p in row if p is not None)
        prep = index.get((axis, size, "prepare"), {})
        counts = f"{prep['interactions']:,}" if "interactions" in prep else ""
        loads = sorted(p["load"] for p in row if p is not None and "load" in p)
        load = f"{loads[0]:.1f}-{loads[-1]:.1f}" if loads else ""
        cells = " | ".join(_time_cell(p) for p in row)
        lines.append(f"| {axis} | 10^{math.log10(size):.3g} | {first['n_users']:,} | {first['n_items']:,} | "
                     f"{counts} | {cells} | {load} |")  # fmt: skip
    processes = [(s, m) for s, m in MEMORY.items() if s in stages]
    lines += ["", "Peak resident memory per process (MiB, `ru_maxrss`), and in brackets what the stage "
              "added to the process after its imports (the slopes below fit the latter):", "",
              "| axis | size | " + " | ".join(m for _, m in processes) + " |",
              "|---" * (2 + len(processes)) + "|"]  # fmt: skip
    for axis, size in keys:
        cells = [_memory_cell(index.get((axis, size, s))) for s, _ in processes]
        lines.append(f"| {axis} | 10^{math.log10(size):.3g} | " + " | ".join(cells) + " |")
    lines += ["", "Slopes of log(measure) against log(size) (least squares over the measured points):", "",
              "| measure | stage | axis | sizes | fitted slope | last two points | work's slope | flag |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in slopes(points):
        sizes = f"10^{math.log10(row['sizes'][0]):.3g}..10^{math.log10(row['sizes'][-1]):.3g}"
        lines.append(f"| {row['measure']} | {row['stage']} | {row['axis']} | {sizes} | {row['fitted']:.2f} | "
                     f"{row['last']:.2f} | {row['expected']:.2f} ({row['why']}) | "
                     f"{('**' + row['flag'] + '**') if row['flag'] else ''} |")  # fmt: skip
    if plot is not None:
        lines += ["", f"Plot: `{plot}`"]
    return "\n".join(lines) + "\n"


def plot(points: list[dict[str, Any]], path: Path) -> None:
    """Log-log PNG: seconds (top) and peak memory (bottom) against users (left) and items (right), one
    line per stage; a point over the cap is drawn at the cap with an upward triangle."""
    import_optional("matplotlib", "the scaling plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitted = {(r["measure"], r["stage"], r["axis"]): r["fitted"] for r in slopes(points)}
    figure, axes = plt.subplots(2, 2, figsize=(12, 9), squeeze=False)
    for column, axis in enumerate(("users", "items")):
        for row, (measure, key, lines) in enumerate(
            (("cpu seconds", "cpu_seconds", {s: s for s in STAGES}), ("peak memory", "added_mb", MEMORY))
        ):
            ax = axes[row][column]
            for stage, label in lines.items():
                series = _series(points, stage, axis, key)
                over = [] if key != "cpu_seconds" else [
                    p for p in points if (p["stage"], p["axis"], p["status"]) == (stage, axis, "over-cap")
                ]  # fmt: skip
                if not series and not over:
                    continue
                slope = fitted.get((measure, label, axis))
                name = label + (f" (slope {slope:.2f})" if slope is not None else "")
                # a log axis: memory added is at least 1 MiB (a tiny stage adds nothing measurable)
                values = [max(p[key], 1.0) if key == "added_mb" else p[key] for p in series]
                drawn = ax.plot([p["size"] for p in series], values, marker="o", label=name)
                if over:
                    colour = drawn[0].get_color()
                    ax.scatter([p["size"] for p in over], [p["cap"] for p in over], marker="^", color=colour)
            if not ax.get_legend_handles_labels()[0]:
                ax.set_axis_off()  # nothing measured on this axis: no log scale to draw
                ax.set_title(f"{measure} against {axis}: no measured point", fontsize=9)
                continue
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(axis + (" (items fixed)" if axis == "users" else " (users fixed)"))
            ylabel = "CPU seconds of the process (1 torch thread)" if key == "cpu_seconds" else (
                "MiB added to the process (peak - after imports)")  # fmt: skip
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    figure.suptitle("transrec scaling (triangles: stopped at the wall-time cap)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def render(points: list[dict[str, Any]], plot_path: Path) -> str:
    """Write the plot and return the Markdown report."""
    plot(points, plot_path)
    return markdown(points, plot_path)
