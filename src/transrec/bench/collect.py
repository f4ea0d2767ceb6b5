"""A bench grid's finished cells, read from their directories, as one row each: ``cells.csv`` and
``cells.parquet`` under ``<output_dir>/report/``.

A cell directory (``<output_dir>/<cell.key>/``, written by the runner, ``bench/runner.py``) holds
``cell.json`` (status, config hash, wall time), and for a cell that ran to its end ``test_metrics.json``
and ``test_ranks.npz``; a trained cell adds the trainer's ``result.json`` (epochs) and ``metrics.jsonl``
(validation metrics per epoch). A cell is collected when its ``cell.json`` has ended (status ``done``,
``failed`` or ``collapsed``) under the config hash the grid has now; a cell still running, never
started, or run with another config is left out (the last kind is logged). Only ``done`` cells carry
test metrics into the tables.

The rows' columns: ``grid, stage, key``, one column per axis of the grid (empty where a cell's stage
lacks the axis), ``status, seconds, epochs_run, best_epoch``, then every test metric any cell has
(``HR@10``, ``new/NDCG@10``, ``new/users``...). The columns up to ``status`` hold text (labels stay the
strings the grid names them by: ``"1.0"``), those after it numbers, so the CSV reads back as written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transrec.config import ConfigError
from transrec.errors import UserError
from transrec.training.trainer import TEST_RANKS_FILE
from transrec.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

CELL_FILE = "cell.json"
ENDED = ("done", "failed", "collapsed")
#: The columns before the axes, and those between the axes and the metrics.
LEADING = ("grid", "stage", "key")
TRAILING = ("status", "seconds", "epochs_run", "best_epoch")
#: Arrays of ``test_ranks.npz``: each test user's index and rank (1 = best); a subset's membership, when
#: the writer stored it, as ``subset_<name>`` (bool, one entry per user).
SUBSET_PREFIX = "subset_"


@dataclass(frozen=True)
class PlannedCell:
    """One cell of the grid as the report needs it: where it lives and what config it must have run."""

    key: str
    stage: str
    labels: dict[str, str]
    config_hash: str


@dataclass
class CellRecord:
    """A collected cell: its grid labels, how it ended, its test metrics, and where its files are."""

    key: str
    stage: str
    labels: dict[str, str]
    status: str
    directory: Path
    seconds: float | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def curve(self, name: str) -> list[float]:
        """The per-epoch values of ``name`` (``valid_NDCG@10``) from ``metrics.jsonl``, epoch 1 first; an
        epoch written twice (a resumed run) counts once, with its last value; empty when there is none."""
        return metric_curve(self.directory, name)

    def ranks(self) -> dict[str, np.ndarray] | None:
        """The arrays of ``test_ranks.npz`` (``users``, ``ranks``, ``targets``, ``subset_<name>``...), or
        None when the cell has none."""
        path = self.directory / TEST_RANKS_FILE
        if not path.is_file():
            return None
        with np.load(path) as arrays:
            return {name: arrays[name] for name in arrays.files}


def collect(output_dir: Path, planned: Iterable[PlannedCell]) -> list[CellRecord]:
    """The ended cells among ``planned`` (see the module docstring), in the order given."""
    records = []
    stale = []
    for cell in planned:
        directory = Path(output_dir) / cell.key
        state = _read_json(directory / CELL_FILE)
        if state is None or state.get("status") not in ENDED:
            continue
        if state.get("config_hash") != cell.config_hash:
            stale.append(cell.key)
            continue
        record = CellRecord(cell.key, cell.stage, dict(cell.labels), state["status"], directory,
                            seconds=_number(state.get("seconds")))  # fmt: skip
        if record.status == "done":
            record.metrics = _read_json(directory / "test_metrics.json") or {}
            result = _read_json(directory / "result.json") or {}
            record.epochs_run = result.get("epochs_run")
            record.best_epoch = result.get("best_epoch")
        records.append(record)
    if stale:
        logger.warning(f"{len(stale)} cell(s) ran with a config the grid no longer has and are left out of "
                       f"the report (rerun them with --rerun changed): {', '.join(stale[:5])}"
                       + (" ..." if len(stale) > 5 else ""))  # fmt: skip
    return records


def cell_rows(records: Sequence[CellRecord], grid: str, axes: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per record with the columns of the module docstring, in that order (a cell without a
    value in a column has None there)."""
    clash = [axis for axis in axes if axis in (*LEADING, *TRAILING)]
    if clash:
        raise ConfigError(f"the grid's axis {clash[0]!r} has the name of a column of cells.csv "
                          f"({', '.join((*LEADING, *TRAILING))}); rename the axis")  # fmt: skip
    metrics = list(dict.fromkeys(name for record in records for name in record.metrics))
    rows = []
    for record in records:
        row: dict[str, Any] = {"grid": grid, "stage": record.stage, "key": record.key}
        row.update({axis: record.labels.get(axis) for axis in axes})
        row.update(status=record.status, seconds=record.seconds, epochs_run=record.epochs_run,
                   best_epoch=record.best_epoch)  # fmt: skip
        row.update({name: record.metrics.get(name) for name in metrics})
        rows.append(row)
    return rows


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every column of ``rows``, in first-seen order."""
    return list(dict.fromkeys(name for row in rows for name in row))


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str] | None = None) -> Path:
    """``rows`` as CSV (a header line, None as an empty field, numbers as Python prints them: exact)."""
    columns = list(columns) if columns is not None else columns_of(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(name) is None else row[name] for name in columns])
    atomic_write_text(Path(path), buffer.getvalue())
    return Path(path)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``cells.csv``: text up to ``status``, numbers after it (int where integral in the
    file), None for an empty field."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        columns = next(reader, None)
        if columns is None or "status" not in columns:
            raise UserError(f"{path} is not a bench cells.csv: its header has no `status` column")
        numeric = set(columns[columns.index("status") + 1 :])
        rows = []
        for values in reader:
            rows.append({name: _parse(value, name in numeric) for name, value in zip(columns, values)})
    return rows


def write_parquet(
    rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str] | None = None
) -> Path:
    """``rows`` as Parquet: text columns up to ``status`` as strings, the numeric ones as int64 where every
    value is an integer, else float64; None as null. Needs pyarrow (the ``[parquet]`` extra)."""
    from transrec.utils.packages import import_optional

    pa = import_optional("pyarrow", "cells.parquet of a bench report")
    import pyarrow.parquet as pq

    columns = list(columns) if columns is not None else columns_of(rows)
    first_numeric = columns.index("status") + 1 if "status" in columns else len(columns)
    arrays = {}
    for position, name in enumerate(columns):
        values = [row.get(name) for row in rows]
        if position < first_numeric:
            kind = pa.string()
        elif all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values):
            kind = pa.int64()
        else:
            kind = pa.float64()
        arrays[name] = pa.array(values, type=kind)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    partial = Path(path).with_name(Path(path).name + ".partial")
    pq.write_table(pa.table(arrays), partial)
    partial.replace(path)
    return Path(path)


def _parse(value: str, numeric: bool) -> Any:
    if value == "":
        return None
    if not numeric:
        return value
    number = float(value)
    return int(value) if value.lstrip("-").isdigit() else number


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path} is not valid JSON ({err}); delete the cell's directory to run it again"
        ) from err
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return data


def metric_curve(directory: Path, name: str) -> list[float]:
    """The per-epoch values of ``name`` (``valid_NDCG@10``) in a run directory's ``metrics.jsonl``, epoch 1
    first; an epoch written twice (a resumed run) counts once, with its last value; empty when there is
    none."""
    path = directory / "metrics.jsonl"
    if not path.is_file():
        return []
    by_epoch: dict[int, float] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number} is not a JSON line: {err}") from err
        if name in record and record.get("epoch") is not None:
            by_epoch[int(record["epoch"])] = float(record[name])
    return [by_epoch[e] for e in sorted(by_epoch)]
