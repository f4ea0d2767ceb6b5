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
from pathlib import Path

import numpy as np

from transrec.bench.collect import CellRecord
from transrec.bench.report_spec import PlotSpec
from transrec.bench.tables import matches
from transrec.config import ConfigError

logger = logging.getLogger(__name__)


def draw_plot(records: Sequence[CellRecord], plot: PlotSpec, path: Path, seed_axis: str | None = "seed",
              labels: Mapping[str, Sequence[str]] | None = None) -> bool:  # fmt: skip
    """Draw ``plot`` from the ``done`` cells of ``records`` into ``path``; False (and a logged note) when
    no cell has data for it or matplotlib is missing. ``labels``: each axis's labels in grid order (the
    order of the series)."""
    mine = [r for r in records if r.status == "done" and matches({"stage": r.stage, **r.labels}, plot.stage,
                                                               plot.filter_labels)]  # fmt: skip
    series = _series(mine, plot.series, labels)
    if plot.kind == "convergence":
        lines = {name: [c for c in (r.curve(f"valid_{plot.metric}") for r in cells) if c]
                 for name, cells in series.items()}  # fmt: skip
        lines = {name: curves for name, curves in lines.items() if curves}
    else:
        lines = {name: _points(cells, plot) for name, cells in series.items()}
        lines = {name: points for name, points in lines.items() if points}
    if not lines:
        logger.warning(f"no plot {path.name}: no finished cell of stage {plot.stage!r} has {plot.metric} "
                       "for it")  # fmt: skip
        return False
    plt = _pyplot()
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    if plot.kind == "convergence":
        _convergence(axis, lines)
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel(f"validation {plot.metric}")
    else:
        _scaling(axis, lines, plot.log_x)
        axis.set_xlabel(plot.x)
        axis.set_ylabel(f"test {plot.metric}")
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
        value = record.metrics.get(plot.metric)
        if value is not None:
            by_x.setdefault(x, []).append(float(value))
    return sorted(by_x.items())


def _convergence(axis, lines: dict[str, list[list[float]]]) -> None:
    for name, curves in lines.items():
        length = max(len(c) for c in curves)
        padded = np.full((len(curves), length), np.nan)
        for row, curve in enumerate(curves):
            padded[row, : len(curve)] = curve
        epochs = np.arange(1, length + 1)
        # The mean over the seeds still running at each epoch (early stopping ends them at different ones).
        line = axis.plot(epochs, np.nanmean(padded, axis=0), linewidth=2,
                         label=f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")[0]  # fmt: skip
        for curve in curves if len(curves) > 1 else ():
            axis.plot(np.arange(1, len(curve) + 1), curve, color=line.get_color(), alpha=0.3, linewidth=0.8)


def _scaling(axis, lines: dict[str, list[tuple[float, list[float]]]], log_x: bool) -> None:
    xs = sorted({x for points in lines.values() for x, _ in points})
    for name, points in lines.items():
        x = np.array([p for p, _ in points])
        mean = np.array([statistics.fmean(v) for _, v in points])
        std = np.array([statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in points])
        seeds = max(len(v) for _, v in points)
        line = axis.plot(x, mean, marker="o", label=f"{name} (≤{seeds} seed{'s' if seeds > 1 else ''})")[0]
        axis.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if log_x:
        axis.set_xscale("log")
    axis.set_xticks(xs, [f"{x:g}" for x in xs])
    axis.minorticks_off()


def _pyplot():
    from transrec.utils.packages import MissingPackageError, import_optional

    try:
        matplotlib = import_optional("matplotlib", "the plots of a bench report")
    except MissingPackageError as err:
        logger.warning(f"no plot: {err}")
        return None
    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt
