"""Running the demo through ``transrec bench``: its two platforms are the grid's datasets
(``prepare_demo_platforms``), its runs the cells of ``demo.grid.demo_grid`` run by
``bench.runner.run_grid`` (each in its own directory, resumable: an interrupted demo continues where it
stopped and a finished cell is never run again), and ``grid_runs`` reads the finished cells back as the
``MethodRun`` s the demo's report needs.

Every cell keeps each test user's rank (``test_ranks.npz``), from which the demo takes the overall and
new-item metrics and the paired significance tests (``demo.summary``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transrec.bench.cells import Cell
from transrec.bench.collect import metric_curve
from transrec.bench.state import read_cell_json
from transrec.data.prepared import PreparedDataset
from transrec.demo.pipeline import DemoConfig
from transrec.errors import UserError
from transrec.evaluation.protocol import stage_histories
from transrec.evaluation.significance import hit_per_user, ndcg_per_user
from transrec.training.trainer import TEST_RANKS_FILE

logger = logging.getLogger(__name__)

SOURCE = "Source"  # the pre-training runs, reported beside the target's methods


@dataclass
class MethodRun:
    """One method, seed and user fraction: what the report needs.

    ``ranks``: each target test user's rank (1 = best), in user order; None for a collapsed run.
    ``stop``: ``patience`` (early stopping ended it), ``cap`` (it reached ``epochs``), ``collapsed``, or
    ``""`` for a method that does not train (Popularity, Zero-shot).
    """

    method: str
    seed: int
    fraction: float = 1.0
    ranks: np.ndarray | None = field(default=None, repr=False)
    valid_curve: list[float] = field(default_factory=list)  # validation NDCG@10 per epoch
    seconds: float = 0.0
    epochs_run: int = 0
    best_epoch: int = 0
    stop: str = ""
    test: dict[str, float] | None = None  # the trainer's test metrics (the source's own, for Source)


@dataclass
class DemoRuns:
    """Every run of the demo, the wall time of each stage, and which target test users have a new item
    as their target (``new_item_mask``)."""

    runs: list[MethodRun]
    stage_seconds: dict[str, float]
    new_item_mask: np.ndarray


def new_item_mask(dataset: PreparedDataset) -> np.ndarray:
    """bool ``[n_users]``: the test users whose target is an item made new by the new-item protocol
    (``PreparedDataset.item_is_new``), which no training or validation input contains."""
    _, targets = stage_histories(dataset, "test")
    return np.asarray(dataset.item_is_new, dtype=bool)[np.asarray(targets, dtype=np.int64)]


def cells(ranks: np.ndarray | None, new_users: np.ndarray, k: int = 10) -> dict[str, float | None]:
    """HR@k and NDCG@k over all users and over the users of ``new_users`` (None where there is no run or
    no such user)."""
    keys = (f"HR@{k}", f"NDCG@{k}", f"new/HR@{k}", f"new/NDCG@{k}")
    if ranks is None:
        return dict.fromkeys(keys)
    hits, gains = hit_per_user(ranks, k), ndcg_per_user(ranks, k)
    new = np.asarray(new_users, dtype=bool)
    values = [hits.mean(), gains.mean()]
    values += [hits[new].mean(), gains[new].mean()] if new.any() else [None, None]
    return {key: None if v is None else float(v) for key, v in zip(keys, values, strict=True)}


class DemoIncompleteError(UserError):
    """Cells of the demo failed or are held by another process: the report would miss them silently."""


#: The demo's stage wall times, by which cells they sum (``run_all``).
STAGES = ("source pre-training", "target, all users", "target scarcity")


def prepare_demo_platforms(config: DemoConfig, rerun: str | None = None,
                           progress: bool = True) -> tuple[PreparedDataset, PreparedDataset]:  # fmt: skip
    """The source and target platforms of ``config``, prepared as the grid's datasets in
    ``<output_dir>/datasets`` (``bench.datasets``: ``demo.pipeline.prepare_platforms``), or found there.

    Raises ``bench.datasets.DatasetChangedError`` when they were prepared otherwise, unless ``rerun`` is
    ``changed`` or ``all``."""
    from transrec.bench.datasets import prepare_dataset
    from transrec.bench.spec import parse_dataset
    from transrec.demo.grid import demo_datasets

    out = Path(config.output_dir)
    prepared = [
        PreparedDataset(prepare_dataset(out, name, parse_dataset(spec, f"datasets.{name}"),
                                        replace_changed=rerun in ("changed", "all"), progress=progress))
        for name, spec in demo_datasets(config).items()
    ]  # fmt: skip
    return prepared[0], prepared[1]


def run_all(source: PreparedDataset, target: PreparedDataset, config: DemoConfig, progress: bool = True,
            rerun: str | None = None) -> DemoRuns:  # fmt: skip
    """Run (or resume, or find finished) every cell of the demo's grid, then read them back
    (``grid_runs``); ``source`` and ``target`` are the prepared platforms (``prepare_demo_platforms``),
    ``rerun`` as ``bench.runner.run_grid`` takes it.

    Raises ``bench.runner.GridChangedError`` (before anything runs) when cells in the output folder ran
    with other options, unless ``rerun`` is ``changed`` or ``all``, and ``DemoIncompleteError`` naming
    the cells that failed or that another process holds; a cell blocked by a collapsed source
    pre-training is an outcome (its HasPT and zero-shot cells are missing)."""
    from transrec.bench.runner import GridChangedError, cell_states, run_grid
    from transrec.demo.grid import demo_grid

    grid = demo_grid(config, target.n_users)
    changed = [key for key, state in cell_states(grid).items() if state == "changed"]
    if changed and rerun not in ("changed", "all"):
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise GridChangedError(
            f"the demo in {grid.output_dir} ran {shown} with other options than these: give the options it "
            "ran with, another --output, or --rerun changed to run them again from scratch (their old "
            "results are removed)"
        )
    summary = run_grid(grid, rerun=rerun, progress=progress)
    wrong = [c for c in summary.cells if c.outcome in ("failed", "locked")]
    if wrong:
        listed = "; ".join(f"{c.key} {c.outcome}" + (f" ({c.error})" if c.error else "") for c in wrong)
        raise DemoIncompleteError(
            f"{len(wrong)} demo cell(s) did not finish: {listed}. Each cell's cell.json in {grid.output_dir} "
            "says more; run `transrec demo` again with the same options to resume (--rerun failed tries "
            "failed cells again)"
        )
    seconds = dict.fromkeys(STAGES, 0.0)
    for outcome in summary.cells:  # None: done before this invocation
        seconds[_stage_of(grid.cell(outcome.key))] += outcome.seconds or 0.0
    return DemoRuns(grid_runs(grid, config, target), seconds, new_item_mask(target))


def _stage_of(cell: Cell) -> str:
    if cell.stage == "source":
        return STAGES[0]
    return STAGES[2] if cell.stage == "target" and float(cell.label("user_fraction")) != 1.0 else STAGES[1]


def grid_runs(grid, config: DemoConfig, target: PreparedDataset) -> list[MethodRun]:
    """Every cell of the demo's ``grid`` as a ``MethodRun``, in the order of the demo's report: the source
    pre-trainings, then ``config.methods`` on all users (over ``seeds``), then the scarcity grid's other
    runs. A collapsed cell has ``stop`` ``collapsed`` and no ranks; a cell that did not run (blocked by a
    collapsed source) has neither ranks nor ``stop``, so the report shows it as missing."""
    runs: dict[tuple[str, float, int], MethodRun] = {}
    for cell in grid.cells():
        run = _cell_run(Path(grid.output_dir) / cell.key, cell, config, target.n_users)
        runs[(run.method, run.fraction, run.seed)] = run
    ordered = [run for (method, _, _), run in runs.items() if method == SOURCE]
    for method in config.methods:
        seeds = config.seeds[:1] if method == "Popularity" else config.seeds
        ordered += [runs[(method, 1.0, seed)] for seed in seeds]
    rest = [run for run in runs.values() if run.method != SOURCE]
    return ordered + [run for run in rest if all(run is not other for other in ordered)]


def _cell_run(directory: Path, cell: Cell, config: DemoConfig, n_users: int) -> MethodRun:
    """One cell's MethodRun from its files (``bench.runner`` wrote cell.json; the trainer or
    ``bench.execute`` the rest)."""
    method = SOURCE if cell.stage == "source" else cell.label("method")
    seed = int(cell.label("seed")) if cell.label("seed") is not None else config.seeds[0]
    fraction = float(cell.label("user_fraction") or 1.0)
    record = read_cell_json(directory) or {}
    if record.get("status") == "collapsed":
        return MethodRun(method, seed, fraction, stop="collapsed")
    if record.get("status") != "done":  # blocked: its source pre-training collapsed
        return MethodRun(method, seed, fraction)
    ranks = None if cell.stage == "source" else stored_ranks(directory, n_users)
    if cell.kind != "train":
        return MethodRun(method, seed, fraction, ranks=ranks, seconds=float(record.get("seconds") or 0.0))
    result = json.loads((directory / "result.json").read_text())
    curve = metric_curve(directory, "valid_NDCG@10")
    # Early stopping ended the run when its last `patience` epochs brought no better validation NDCG@10.
    patience = cell.config["patience"]
    stop = "patience" if result["epochs_run"] - result["best_epoch"] >= patience else "cap"
    return MethodRun(method, seed, fraction, ranks, curve, float(result["seconds"]), result["epochs_run"],
                     result["best_epoch"], stop, result.get("test") or {})  # fmt: skip


def stored_ranks(directory: Path, n_users: int) -> np.ndarray:
    """Each test user's rank in user order, from the cell's ``test_ranks.npz`` (every cell kind writes it
    before it is done)."""
    stored = np.load(directory / TEST_RANKS_FILE)
    users, ranks = np.asarray(stored["users"]), np.asarray(stored["ranks"])
    if len(users) != n_users or not np.array_equal(np.sort(users), np.arange(n_users)):
        raise UserError(f"{directory / TEST_RANKS_FILE} ranks {len(users)} test users, not the {n_users} "
                        "of the target platform: was the cell run on another dataset?")  # fmt: skip
    ordered = np.empty(n_users, dtype=ranks.dtype)
    ordered[users] = ranks
    return ordered
