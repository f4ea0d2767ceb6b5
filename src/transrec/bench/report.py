"""``transrec bench GRID.yaml --report``: every finished cell of a grid into ``cells.csv`` and
``cells.parquet``, the grid's tables into ``tables.md``, and its plots as PNGs, under
``<output_dir>/report/``. Nothing is run; a report of a half-finished grid shows what is missing.

    from transrec.bench.report import write_report
    paths = write_report(grid)          # a bench.grid.Grid, or ReportInputs built by hand
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from transrec.bench.collect import CellRecord, PlannedCell, cell_rows, collect, write_csv, write_parquet
from transrec.bench.paired import improvement_tests
from transrec.bench.plots import draw_plot
from transrec.bench.report_spec import ReportSpec, grid_axes, plot_stem
from transrec.bench.tables import render_table
from transrec.utils.io import atomic_write_text
from transrec.utils.packages import MissingPackageError

logger = logging.getLogger(__name__)

REPORT_DIR = "report"


class GridLike(Protocol):
    """What the report reads of a grid (``bench.grid.Grid``): its name, description, output folder,
    ``report:`` dict, cells, each cell's config hash, and each stage's axes and labels."""

    name: str
    output_dir: Path | str

    def axis_labels(self) -> dict[str, dict[str, list[str]]]: ...

    def cells(self) -> Sequence[Any]: ...

    def config_hash(self, cell: Any) -> str: ...


@dataclass
class ReportInputs:
    """Everything a report needs of a grid. ``stages``: ``{stage: {axis: [label, ...]}}`` in the grid's
    order; ``cells``: every cell of the grid with the config hash it must have run under."""

    name: str
    output_dir: Path
    stages: dict[str, dict[str, list[str]]]
    cells: list[PlannedCell]
    report: dict[str, Any] | None = None
    description: str = ""

    @classmethod
    def from_grid(cls, grid: GridLike, output_dir: Path | None = None) -> ReportInputs:
        """The inputs of ``grid``: its cells in ``Grid.cells()`` order, its stages, axes and labels in the
        grid's order (``report_spec.grid_axes``)."""
        _, stages = grid_axes(grid)
        planned = [PlannedCell(cell.key, cell.stage, {str(a): str(v) for a, v in cell.labels},
                               grid.config_hash(cell)) for cell in grid.cells()]  # fmt: skip
        return cls(
            name=grid.name,
            output_dir=Path(output_dir if output_dir is not None else grid.output_dir),
            stages=stages,
            cells=planned,
            report=getattr(grid, "report", None) or None,
            description=getattr(grid, "description", None) or "",
        )

    @property
    def axes(self) -> list[str]:
        """Every axis of the grid, in first-seen order (the axis columns of ``cells.csv``)."""
        return list(dict.fromkeys(axis for axes in self.stages.values() for axis in axes))

    def spec(self) -> ReportSpec:
        return ReportSpec.from_dict(self.report, {stage: list(axes) for stage, axes in self.stages.items()},
                                    labels=self.stages)  # fmt: skip


def write_report(grid: GridLike | ReportInputs, output_dir: Path | None = None) -> list[Path]:
    """Collect, tabulate and plot the finished cells of ``grid`` (see the module docstring); returns the
    files written. ``output_dir`` overrides the grid's own (where its cells are, and ``report/`` goes).

    Raises:
        ConfigError: the grid's ``report:`` section names a stage, axis or label the grid lacks.
    """
    inputs = grid if isinstance(grid, ReportInputs) else ReportInputs.from_grid(grid, output_dir)
    if output_dir is not None:
        inputs.output_dir = Path(output_dir)
    spec = inputs.spec()  # before anything is read: a bad report section fails fast
    out = inputs.output_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    records = collect(inputs.output_dir, inputs.cells)
    rows = cell_rows(records, inputs.name, inputs.axes)
    columns = ["grid", "stage", "key", *inputs.axes, "status", "seconds", "epochs_run", "best_epoch"]
    columns += [c for c in (rows[0] if rows else {}) if c not in columns]
    paths = [write_csv(rows, out / "cells.csv", columns)]
    try:
        paths.append(write_parquet(rows, out / "cells.parquet", columns))
    except MissingPackageError as err:
        logger.warning(f"cells.csv only, no cells.parquet: {err}")
    paths.append(_write_tables(inputs, spec, records, rows, out / "tables.md"))
    for index, plot in enumerate(spec.plots):
        path = out / f"{plot_stem(plot, index)}.png"
        if draw_plot(records, plot, path, inputs.stages.get(plot.stage)):
            paths.append(path)
    logger.info(f"report of {inputs.name}: {len(records)} of {len(inputs.cells)} cells ended; wrote "
                + ", ".join(p.name for p in paths))  # fmt: skip
    return paths


def _write_tables(inputs: ReportInputs, spec: ReportSpec, records: list[CellRecord],
                  rows: list[dict[str, Any]], path: Path) -> Path:  # fmt: skip
    """``tables.md``: the grid's name and description, how many cells are done, then every table."""
    done = sum(r.status == "done" for r in records)
    others = {status: sum(r.status == status for r in records) for status in ("failed", "collapsed")}
    ended = ", ".join(f"{n} {status}" for status, n in others.items() if n)
    lines = [f"# {inputs.name}", ""]
    if inputs.description:
        lines += [inputs.description, ""]
    lines += [f"Cells done: {done} of {len(inputs.cells)}" + (f" ({ended})" if ended else "") + ".", ""]
    planned = [{"stage": c.stage, **c.labels} for c in inputs.cells]
    for table in spec.tables:
        tests = improvement_tests(records, table, spec.seed_axis, spec.bootstrap_resamples)
        labels = inputs.stages.get(table.stage)
        lines.append(render_table(rows, table, seed_axis=spec.seed_axis, labels=labels, planned=planned,
                                  tests=tests, level=spec.significance_level))  # fmt: skip
    if not spec.tables:
        lines += ["The grid's `report:` section names no table.", ""]
    atomic_write_text(path, "\n".join(lines).rstrip("\n") + "\n")
    return path
