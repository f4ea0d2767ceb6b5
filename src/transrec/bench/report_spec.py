"""The ``report:`` section of a bench grid: which tables and plots ``transrec bench GRID --report`` draws.

Parsed by :meth:`ReportSpec.from_dict` against the grid's stages and their axes (and, when given, each
axis's labels), so that a table naming an axis its stage lacks, or leaving an axis neither laid out nor
fixed, is refused before anything is collected, with a ``ConfigError`` naming the key path
(``report.tables[0].filter.user_fraction``)::

    report:
      seed_axis: seed                 # aggregated: mean ± std over its labels
      bootstrap_resamples: 10000      # of the paired significance tests
      tables:
        - title: "Table 2: NDCG@10 (%) on the target"
          stage: finetune
          rows: [item]                # axes whose labels form the rows, in the grid's label order (none:
                                      #   one row, named after the stage: a stage without axes)
          columns: [transfer]         # several: nested header "a / b"
          metric: NDCG@10             # a key of test_metrics.json (new/NDCG@10: a subset's)
          percent: true               # x100, as the papers print
          filter: {user_fraction: "1.0"}   # every other axis but the seed axis must be fixed
          improvement: {axis: transfer, of: HasPT, over: NoPT}   # (a - b) / b as +x.y%
          significance: true          # paired bootstrap over users (seeds paired) from test_ranks.npz
      plots:
        - {kind: convergence, stage: finetune, series: [transfer], filter: {...}, metric: NDCG@10}
        - {kind: scaling, stage: finetune, x: user_fraction, series: [transfer], metric: NDCG@10,
           log_x: true}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from transrec.bench.spec import format_label
from transrec.config import ConfigError, from_dict

#: Metrics whose per-user values the significance test computes from each test user's rank
#: (``evaluation.significance.hit_per_user`` / ``ndcg_per_user``), optionally of a subset: ``new/HR@10``.
RANK_METRIC = re.compile(r"^(?:(?P<subset>[^/]+)/)?(?P<name>HR|NDCG)@(?P<k>[1-9][0-9]*)$")


@dataclass(frozen=True)
class Improvement:
    """The relative improvement ``(of - over) / over`` of one label of ``axis`` over another, printed as
    an extra column (``axis`` among the table's columns) or row (among its rows)."""

    axis: str
    of: str
    over: str


@dataclass(frozen=True)
class TableSpec:
    """One Markdown table (see the module docstring for each field). ``decimals``: digits after the
    point (default 2 with ``percent``, else 4)."""

    title: str
    stage: str
    metric: str
    rows: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    percent: bool = False
    filter: dict[str, Any] = field(default_factory=dict)
    improvement: Improvement | None = None
    significance: bool = False
    decimals: int | None = None

    @property
    def digits(self) -> int:
        return self.decimals if self.decimals is not None else (2 if self.percent else 4)

    @property
    def filter_labels(self) -> dict[str, str]:
        """The filter with every value as the label it matches (a plain-list axis labels its values as
        ``bench.spec.format_label`` does: ``user_fraction: 1.0`` matches the label ``"1.0"``)."""
        return _labels(self.filter, "filter")


@dataclass(frozen=True)
class PlotSpec:
    """One PNG. ``convergence``: ``valid_<metric>`` per epoch from ``metrics.jsonl``, the mean over seeds,
    one line per label combination of ``series``. ``scaling``: the test ``metric`` against the numeric
    axis ``x`` (mean over seeds, band ± std), one line per series. ``name``: the file's stem (default
    ``<index>-<kind>-<stage>``)."""

    kind: Literal["convergence", "scaling"]
    stage: str
    metric: str
    series: tuple[str, ...] = ()
    filter: dict[str, Any] = field(default_factory=dict)
    x: str | None = None
    log_x: bool = False
    title: str | None = None
    name: str | None = None

    @property
    def filter_labels(self) -> dict[str, str]:
        return _labels(self.filter, "filter")


@dataclass(frozen=True)
class ReportSpec:
    """The whole ``report:`` section. ``seed_axis``: the axis averaged over (absent from a stage: one run
    per cell). ``significance_level``: where a ``*`` is printed."""

    seed_axis: str | None = "seed"
    tables: tuple[TableSpec, ...] = ()
    plots: tuple[PlotSpec, ...] = ()
    bootstrap_resamples: int = 10_000
    significance_level: float = 0.05

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any] | None,
        axes: Mapping[str, Sequence[str]] | None = None,
        labels: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        prefix: str = "report",
    ) -> ReportSpec:
        """Parse and check ``data`` (the grid's ``report:`` dict; None: no tables, no plots).

        Args:
            axes: ``{stage: [axis, ...]}`` of the grid, every stage in order; None checks only the
                section's own structure (``from_grid`` checks it against a grid).
            labels: optional ``{stage: {axis: [label, ...]}}``; when given, filter values, improvement
                labels and scaling x labels are checked too.
            prefix: the key path of ``data`` in error messages.

        Raises:
            ConfigError: naming the key path of the first problem found.
        """
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"{prefix}: expected a mapping of report settings, got {data!r}")
        spec = from_dict(cls, data, prefix=prefix + ".")
        if spec.bootstrap_resamples < 1:
            raise ConfigError(
                f"{prefix}.bootstrap_resamples must be at least 1, got {spec.bootstrap_resamples}"
            )
        if not 0.0 < spec.significance_level < 1.0:
            raise ConfigError(f"{prefix}.significance_level must be in (0, 1), got {spec.significance_level}")
        checker = _Checker(axes, labels or {}, spec.seed_axis) if axes is not None else None
        for index, table in enumerate(spec.tables):
            _labels(table.filter, f"{prefix}.tables[{index}].filter")  # a value that is no label fails here
            if checker is not None:
                checker.table(table, f"{prefix}.tables[{index}]")
        names: dict[str, str] = {}
        for index, plot in enumerate(spec.plots):
            where = f"{prefix}.plots[{index}]"
            _labels(plot.filter, f"{where}.filter")
            if checker is not None:
                checker.plot(plot, where)
            stem = plot_stem(plot, index)
            if stem in names:
                raise ConfigError(f"{where}: its file name {stem}.png is also that of {names[stem]}")
            names[stem] = where
        return spec

    @classmethod
    def from_grid(cls, grid: Any) -> ReportSpec:
        """Parse ``grid.report`` (a ``bench.grid.Grid``) against the grid's stages, axes and labels."""
        return cls.from_dict(grid.report or None, *grid_axes(grid))


def grid_axes(grid: Any) -> tuple[dict[str, list[str]], dict[str, dict[str, list[str]]]]:
    """``({stage: [axis, ...]}, {stage: {axis: [label, ...]}})`` of a ``bench.grid.Grid``, in the grid's
    order (``Grid.axis_labels``: axes as written, labels in the order its cells first use them)."""
    labels = {stage: {axis: list(names) for axis, names in axes.items()}
              for stage, axes in grid.axis_labels().items()}  # fmt: skip
    return {stage: list(axes) for stage, axes in labels.items()}, labels


def plot_stem(plot: PlotSpec, index: int) -> str:
    """The file name (without ``.png``) of the plot at ``index`` of the report's plots."""
    return plot.name or f"{index + 1:02d}-{plot.kind}-{plot.stage}"


class _Checker:
    """The checks of tables and plots against the grid's stages, axes and labels."""

    def __init__(self, axes: Mapping[str, Sequence[str]], labels: Mapping[str, Mapping[str, Sequence[str]]],
                 seed_axis: str | None) -> None:  # fmt: skip
        self.axes = {stage: list(names) for stage, names in axes.items()}
        self.labels = labels
        self.seed_axis = seed_axis

    def table(self, table: TableSpec, where: str) -> None:
        stage_axes = self._stage(table.stage, where)
        self._layout({"rows": table.rows, "columns": table.columns}, table.stage, stage_axes, where)
        self._filter(
            _labels(table.filter, f"{where}.filter"),
            table.stage,
            stage_axes,
            [*table.rows, *table.columns],
            where,
        )
        if table.decimals is not None and not 0 <= table.decimals <= 10:
            raise ConfigError(f"{where}.decimals must be in 0..10, got {table.decimals}")
        if table.improvement is not None:
            self._improvement(table, where)
        if table.significance:
            if table.improvement is None:
                raise ConfigError(f"{where}.significance needs an improvement: it tests `of` against `over`")
            if not RANK_METRIC.match(table.metric):
                raise ConfigError(
                    f"{where}.significance: the paired test computes per-user values from test_ranks.npz, "
                    f"which exist for HR@k and NDCG@k (of all users or a subset), not {table.metric!r}"
                )

    def plot(self, plot: PlotSpec, where: str) -> None:
        stage_axes = self._stage(plot.stage, where)
        laid_out = {"series": plot.series}
        if plot.kind == "scaling":
            if plot.x is None:
                raise ConfigError(f"{where}.x: a scaling plot needs the numeric axis on its x")
            laid_out["x"] = (plot.x,)
            self._numeric_labels(plot.stage, plot.x, f"{where}.x", positive=plot.log_x)
        elif plot.x is not None or plot.log_x:
            raise ConfigError(
                f"{where}: x and log_x belong to scaling plots; a convergence plot's x is the epoch"
            )
        self._layout(laid_out, plot.stage, stage_axes, where)
        fixed = _labels(plot.filter, f"{where}.filter")
        self._filter(fixed, plot.stage, stage_axes, [*plot.series, *laid_out.get("x", ())], where)

    def _stage(self, stage: str, where: str) -> list[str]:
        if stage not in self.axes:
            known = ", ".join(self.axes) or "none"
            raise ConfigError(f"{where}.stage: no stage {stage!r} in the grid (stages: {known})")
        return self.axes[stage]

    def _layout(
        self, groups: dict[str, Sequence[str]], stage: str, stage_axes: list[str], where: str
    ) -> None:
        seen: dict[str, str] = {}
        for group, names in groups.items():
            for index, axis in enumerate(names):
                key = f"{where}.{group}[{index}]"
                if axis not in stage_axes:
                    raise ConfigError(
                        f"{key}: stage {stage!r} has no axis {axis!r} (axes: {_listing(stage_axes)})"
                    )
                if axis == self.seed_axis:
                    raise ConfigError(
                        f"{key}: {axis!r} is the seed axis, which is averaged over, not laid out"
                    )
                if axis in seen:
                    raise ConfigError(f"{key}: axis {axis!r} is already laid out in {seen[axis]}")
                seen[axis] = key

    def _filter(self, fixed: dict[str, str], stage: str, stage_axes: list[str], laid_out: list[str],
                where: str) -> None:  # fmt: skip
        for axis, label in fixed.items():
            key = f"{where}.filter.{axis}"
            if axis not in stage_axes:
                raise ConfigError(
                    f"{key}: stage {stage!r} has no axis {axis!r} (axes: {_listing(stage_axes)})"
                )
            if axis in laid_out or axis == self.seed_axis:
                role = "the seed axis" if axis == self.seed_axis else "laid out already"
                raise ConfigError(f"{key}: axis {axis!r} is {role}; it cannot also be fixed")
            self._label(stage, axis, label, key)
        free = [a for a in stage_axes if a not in laid_out and a not in fixed and a != self.seed_axis]
        if free:
            raise ConfigError(
                f"{where}.filter: fix the axis(es) {_listing(free)} of stage {stage!r} to one label each, or "
                "lay them out; otherwise several cells would fall into one place"
            )

    def _improvement(self, table: TableSpec, where: str) -> None:
        improvement = table.improvement
        key = f"{where}.improvement"
        if improvement.axis not in (*table.rows, *table.columns):
            raise ConfigError(f"{key}.axis: {improvement.axis!r} is neither among the rows nor the columns")
        if improvement.of == improvement.over:
            raise ConfigError(f"{key}: `of` and `over` are both {improvement.of!r}")
        self._label(table.stage, improvement.axis, improvement.of, f"{key}.of")
        self._label(table.stage, improvement.axis, improvement.over, f"{key}.over")

    def _label(self, stage: str, axis: str, label: str, key: str) -> None:
        known = self.labels.get(stage, {}).get(axis)
        if known is not None and label not in known:
            raise ConfigError(f"{key}: axis {axis!r} of stage {stage!r} has no label {label!r} "
                              f"(labels: {_listing(known)})")  # fmt: skip

    def _numeric_labels(self, stage: str, axis: str, key: str, positive: bool) -> None:
        for label in self.labels.get(stage, {}).get(axis) or ():
            try:
                value = float(label)
            except ValueError:
                raise ConfigError(
                    f"{key}: axis {axis!r} has the label {label!r}, which is not a number"
                ) from None
            if positive and value <= 0:
                raise ConfigError(f"{key}: log_x needs labels above 0, and axis {axis!r} has {label!r}")


def _labels(fixed: Mapping[str, Any], where: str) -> dict[str, str]:
    return {axis: format_label(value, f"{where}.{axis}") for axis, value in fixed.items()}


def _listing(names: Sequence[str]) -> str:
    return ", ".join(map(str, names)) or "none"
