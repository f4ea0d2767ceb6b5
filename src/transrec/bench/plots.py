"""A bench report's PNG plots (``bench.report_spec.PlotSpec``), drawn with matplotlib's Agg backend.

- ``convergence``: ``valid_<metric>`` per epoch from each cell's ``metrics.jsonl``; one line per label
  combination of ``series``, the mean over the seeds still running at each epoch (each seed thin).
- ``scaling``: the test metric against the numeric axis ``x``; one line per series, the mean over seeds
  at each x with a band of ± one sample standard deviation (none with one seed).

matplotlib is optional (``pip install 'transrec[plot]'``): without it no plot is drawn, a note is logged,
and the functions return False.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transrec.bench.collect import CellRecord
from transrec.bench.report_spec import PlotSpec
from transrec.bench.tables import matches
from transrec.config import ConfigError
from transrec.utils.packages import pyplot_or_none

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Line:
    """One line of a plot: at each ``x``, the ``mean`` over the seeds that have a value there, their sample
    standard deviation ``std`` (0 with one seed) and their number ``n``; ``runs``: the values behind them
    (convergence: each seed's curve; scaling: the seeds' values at each x)."""

    name: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray
    runs: list[list[float]]


def plot_lines(records: Sequence[CellRecord], plot: PlotSpec,
               labels: Mapping[str, Sequence[str]] | None = None) -> list[Line]:  # fmt: skip
    """The lines of ``plot`` from the ``done`` cells of ``records``, one per label combination of
    ``plot.series`` in the grid's label order (``labels``), without the series that have no data.

    Raises:
        ConfigError: a scaling plot's x label that is not a number, or not above 0 with ``log_x``.
    """
    mine = [r for r in records if r.status == "done" and matches({"stage": r.stage, **r.labels}, plot.stage,
                                                               plot.filter_labels)]  # fmt: skip
    lines = []
    for name, cells in _series(mine, plot.series, labels).items():
        if plot.kind == "convergence":
            curves = [c for c in (r.curve(f"valid_{plot.metric}") for r in cells) if c]
            if curves:
                lines.append(_convergence_line(name, curves))
        else:
            points = _points(cells, plot)
            if points:
                lines.append(_scaling_line(name, points))
    return lines


def draw_plot(records: Sequence[CellRecord], plot: PlotSpec, path: Path,
              labels: Mapping[str, Sequence[str]] | None = None) -> bool:  # fmt: skip
    """Draw ``plot`` (``plot_lines``) into ``path``; False (and a logged note) when no cell has data for
    it or matplotlib is missing."""
    lines = plot_lines(records, plot, labels)
    if not lines:
        logger.warning(f"no plot {path.name}: no finished cell of stage {plot.stage!r} has {plot.metric} "
                       "for it")  # fmt: skip
        return False
    plt = pyplot_or_none("the plots of a bench report")
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for line in lines:
        low, high = int(line.n.min()), int(line.n.max())
        seeds = f"{low}" if low == high else f"{low}-{high}"
        label = f"{line.name} ({seeds} seed{'s' if high > 1 else ''})"
        if plot.kind == "convergence":
            drawn = axis.plot(line.x, line.mean, linewidth=2, label=label)[0]
            for curve in line.runs if len(line.runs) > 1 else ():  # each seed thin under the mean
                axis.plot(
                    np.arange(1, len(curve) + 1), curve, color=drawn.get_color(), alpha=0.3, linewidth=0.8
                )
        else:
            drawn = axis.plot(line.x, line.mean, marker="o", label=label)[0]
            axis.fill_between(line.x, line.mean - line.std, line.mean + line.std, color=drawn.get_color(),
                              alpha=0.2)  # fmt: skip
    if plot.kind == "convergence":
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel(f"validation {plot.metric} (mean over seeds)")
    else:
        if plot.log_x:
            axis.set_xscale("log")
        xs = sorted({float(x) for line in lines for x in line.x})
        axis.set_xticks(xs, [f"{x:g}" for x in xs])
        axis.minorticks_off()
        axis.set_xlabel(plot.x)
        axis.set_ylabel(f"test {plot.metric} (mean ± std over seeds)")
    fixed = ", ".join(f"{a}={v}" for a, v in plot.filter_labels.items())
    default = f"{plot.stage}: {plot.metric}" + (f" ({fixed})" if fixed else "")
    axis.set_title(plot.title or default, fontsize=10)
    axis.grid(alpha=0.3)
    if len(lines) > 1 or plot.series:
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True


def _series(records: Sequence[CellRecord], axes: Sequence[str],
            labels: Mapping[str, Sequence[str]] | None) -> dict[str, list[CellRecord]]:  # fmt: skip
    """The records by their labels on ``axes`` (a legend name ``a=x, b=y``), in the grid's label order."""

    def rank(record: CellRecord) -> tuple:
        known = {a: list((labels or {}).get(a, ())) for a in axes}
        # A label the grid does not list (none should be) goes after those it does.
        here = {a: record.labels.get(a) for a in axes}
        return tuple(known[a].index(here[a]) if here[a] in known[a] else len(known[a]) for a in axes)

    groups: dict[str, list[CellRecord]] = {}
    for record in sorted(records, key=rank):  # stable: cells of one rank keep the grid's order
        name = ", ".join(f"{a}={record.labels.get(a)}" for a in axes) or "all cells"
        groups.setdefault(name, []).append(record)
    return groups


def _points(cells: Sequence[CellRecord], plot: PlotSpec) -> list[tuple[float, list[float]]]:
    """``[(x, [value per seed]), ...]`` sorted by x, for the cells with the metric."""
    by_x: dict[float, list[float]] = {}
    for record in cells:
        label = record.labels.get(plot.x)
        try:
            x = float(label)
        except (TypeError, ValueError):
            raise ConfigError(f"plot {plot.name or plot.kind}: axis {plot.x!r} has the label {label!r}, "
                              "which is not a number") from None  # fmt: skip
        if plot.log_x and x <= 0:
            raise ConfigError(f"plot {plot.name or plot.kind}: log_x needs x above 0, and axis {plot.x!r} "
                              f"has the label {label!r}")  # fmt: skip
        value = record.metrics.get(plot.metric)
        if value is not None:
            by_x.setdefault(x, []).append(float(value))
    return sorted(by_x.items())


def _convergence_line(name: str, curves: list[list[float]]) -> Line:
    length = max(len(c) for c in curves)
    padded = np.full((len(curves), length), np.nan)
    for row, curve in enumerate(curves):
        padded[row, : len(curve)] = curve
    # At each epoch, over the seeds still running (early stopping ends them at different epochs).
    n = np.sum(~np.isnan(padded), axis=0)
    std = np.array([np.std(column[~np.isnan(column)], ddof=1) if count > 1 else 0.0
                    for column, count in zip(padded.T, n)])  # fmt: skip
    return Line(name, np.arange(1, length + 1), np.nanmean(padded, axis=0), std, n, curves)


def _scaling_line(name: str, points: list[tuple[float, list[float]]]) -> Line:
    values = [v for _, v in points]
    return Line(
        name,
        x=np.array([x for x, _ in points]),
        mean=np.array([statistics.fmean(v) for v in values]),
        std=np.array([statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]),
        n=np.array([len(v) for v in values]),
        runs=values,
    )
