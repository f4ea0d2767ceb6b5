"""Running a grid: every cell of this shard, in order, each in its own directory, resumable.

    summary = run_grid(load_grid("configs/bench/x.yaml"), shard=Shard(0, 4))
    cell_states(grid)        # {cell key: state} for --dry-run (bench.state lists the states)

For each cell (``bench.cells.Cell``) of the shard (``bench.shard``) and of the ``stages`` asked for:

- ``done`` is skipped (``--rerun all`` runs it again from scratch); ``failed`` and ``collapsed`` are
  kept as they are, and reported, unless ``--rerun failed`` (a failed cell) or ``--rerun all`` (both);
- ``changed`` (``cell.json`` records another config hash, or the dependency was rerun since) is refused
  before anything runs, with the list of such cells, unless ``--rerun changed|all``: it then runs from
  scratch, its old run files removed first;
- ``running`` (another process or host holds its lock) is skipped and reported as ``locked``;
- a cell whose dependency is not done waits for it when another process may still finish it (another
  shard, or another invocation holding its lock; polled every ``poll`` seconds, at most ``wait``), and is
  ``blocked`` when the dependency failed, collapsed or is blocked, when nothing will run it (unsharded,
  a stage left out with ``--stage``), or when the wait runs out;
- otherwise it runs under its lock: ``train`` through ``training.trainer.train`` with ``resume: auto``
  (a killed cell continues from ``last/``; a finished run whose cell.json was lost is returned as stored),
  ``dataset`` = the prepared named dataset (``bench.datasets``), ``output_dir`` = the cell's directory
  and ``init_checkpoint`` = the dependency's ``best/``; ``evaluate`` and ``popularity`` as
  ``bench.execute`` says. A ``TrainingCollapsed`` marks the cell ``collapsed``; any other exception
  marks it ``failed`` with the error, and the grid goes on with the cells that do not depend on it.

``cell.json`` is written when a cell starts (``running``) and replaced atomically when it ends. Under
``torchrun`` every process runs ``run_grid``: rank 0 decides (locks, waits, datasets) and tells the
others, every process runs a train or evaluate cell together (DDP/FSDP, sharded evaluation), and rank 0
alone writes files.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transrec
from transrec.bench.cells import Cell
from transrec.bench.datasets import dataset_state, prepare_dataset
from transrec.bench.execute import remove_test_outputs, run_evaluate_cell, run_popularity_cell, run_train_cell
from transrec.bench.shard import Shard, shard_cells, wait_for
from transrec.bench.state import (
    CellLock,
    cell_state,
    dependency_stamp,
    is_locked,
    now_iso,
    read_cell_json,
    write_cell_json,
)
from transrec.errors import UsageError, UserError

logger = logging.getLogger(__name__)

RERUN = ("changed", "failed", "all")
DEFAULT_WAIT = 24 * 3600.0
#: What a cell came to in one invocation (``CellOutcome.outcome``); the first two count as success.
OUTCOMES = ("done", "skipped", "failed", "collapsed", "blocked", "locked")


#: The states of a dependency that each ``--rerun`` may still act on (so a dependent waits for it).
_RERUN_STATES = {"changed": ("changed",), "failed": ("failed",), "all": ("changed", "failed", "collapsed")}


class GridChangedError(UserError):
    """Cells (or datasets) of the grid were run with another config than the grid gives now."""


@dataclass
class CellOutcome:
    """One cell in one invocation: ``outcome`` is ``done`` (ran to the end now), ``skipped`` (was done),
    ``failed``, ``collapsed``, ``blocked`` or ``locked`` (another process holds it)."""

    key: str
    outcome: str
    seconds: float | None = None
    error: str | None = None


@dataclass
class GridSummary:
    """What ``run_grid`` did: one outcome per cell of the shard, in order."""

    grid: str
    shard: Shard | None
    cells: list[CellOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every cell of the shard is done (now or before)."""
        return all(c.outcome in ("done", "skipped") for c in self.cells)

    def counts(self) -> dict[str, int]:
        counted = Counter(c.outcome for c in self.cells)
        return {name: counted[name] for name in OUTCOMES if counted[name]}

    def format(self) -> str:
        shard = f" (shard {self.shard})" if self.shard else ""
        lines = [f"grid {self.grid}{shard}: " + (", ".join(f"{n} {o}" for o, n in self.counts().items())
                                                 or "no cells")]  # fmt: skip
        for cell in self.cells:
            if cell.outcome not in ("done", "skipped"):
                lines.append(f"  {cell.outcome:9s} {cell.key}" + (f": {cell.error}" if cell.error else ""))
        return "\n".join(lines)


def cell_dir(grid, cell: Cell) -> Path:
    return Path(grid.output_dir) / cell.key


def cell_states(grid, cells: Iterable[Cell] | None = None) -> dict[str, str]:
    """``{cell key: state}`` of every cell (or of ``cells`` and what they depend on), read from the
    files (``bench.state``); runs nothing and prepares nothing."""
    states: dict[str, str] = {}
    by_key = {cell.key: cell for cell in grid.cells()}
    wanted = list(grid.cells() if cells is None else cells)

    def state(cell: Cell) -> str:
        if cell.key not in states:
            dependency = by_key[cell.depends_on] if cell.depends_on else None
            dep_state = state(dependency) if dependency else None
            dep_record = read_cell_json(cell_dir(grid, dependency)) if dependency else None
            states[cell.key] = cell_state(cell_dir(grid, cell), grid.config_hash(cell), dep_state, dep_record)
        return states[cell.key]

    for cell in wanted:
        state(cell)
    return {cell.key: states[cell.key] for cell in wanted}


def select_cells(grid, shard: Shard | None = None, stages: Iterable[str] | None = None) -> list[Cell]:
    """The cells of ``shard`` (all without one) in the ``stages`` named (all without), in grid order."""
    cells = grid.cells()
    if stages:
        names = list(stages)
        for name in names:
            grid.stage(name)  # ConfigError naming the grid's stages for an unknown one
        cells = [cell for cell in cells if cell.stage in names]
    return shard_cells(cells, shard, lambda cell: cell.stage)


def run_grid(
    grid,
    shard: Shard | None = None,
    stages: Iterable[str] | None = None,
    rerun: str | None = None,
    wait: float = DEFAULT_WAIT,
    progress: bool = True,
    poll: float = 5.0,
) -> GridSummary:
    """Run the cells of ``shard`` in ``stages`` (module docstring); returns what each came to.

    ``rerun``: None, ``changed``, ``failed`` or ``all``. Raises ``GridChangedError`` (before running
    anything) when a cell or dataset to run has changed and ``rerun`` allows neither."""
    if rerun not in (None, *RERUN):
        raise UsageError(f"--rerun must be one of {', '.join(RERUN)}, got {rerun!r}")
    cells = select_cells(grid, shard, stages)
    runner = _GridRunner(grid, rerun, wait, poll, progress, sharded=shard is not None and shard.count > 1)
    with runner.process_group():
        _refuse_changed(grid, cells, rerun)  # every process reads the same files: all refuse, or none
        logger.info(f"grid {grid.name}: {len(cells)} cells" + (f" (shard {shard})" if shard else "")
                    + f" in {grid.output_dir}")  # fmt: skip
        summary = GridSummary(grid.name, shard)
        for index, cell in enumerate(cells, 1):
            outcome = runner.run(cell, f"[{index}/{len(cells)}]")
            summary.cells.append(outcome)
    return summary


def _refuse_changed(grid, cells: list[Cell], rerun: str | None) -> None:
    if rerun in ("changed", "all"):
        return
    changed = [key for key, state in cell_states(grid, cells).items() if state == "changed"]
    datasets = sorted({cell.dataset for cell in cells})
    changed_data = [
        n for n in datasets if dataset_state(Path(grid.output_dir), n, grid.datasets[n]) == "changed"
    ]
    if changed or changed_data:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        what = [f"cells {shown}"] if changed else []
        what += [f"datasets {', '.join(changed_data)}"] if changed_data else []
        raise GridChangedError(
            f"grid {grid.name}: {' and '.join(what)} ran with another config than the grid gives now; "
            "rerun with --rerun changed to run them again from scratch (their old results are removed), "
            "or restore the grid file"
        )


class _GridRunner:
    """Runs cells one at a time and remembers what this invocation did to each."""

    def __init__(
        self, grid, rerun: str | None, wait: float, poll: float, progress: bool, sharded: bool
    ) -> None:
        self.grid, self.rerun, self.wait, self.poll, self.progress = grid, rerun, wait, poll, progress
        self.sharded = sharded  # other shards may run this one's dependencies: wait for them
        self.by_key = {cell.key: cell for cell in grid.cells()}
        self.outcomes: dict[str, str] = {}
        self.datasets: dict[str, Path] = {}
        self.rank, self.world_size = 0, 1
        self._lock: CellLock | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def process_group(self):
        """Under torchrun, a process group whose collectives outlast the longest wait (the default
        timeout, 10-30 minutes, would end a shard waiting hours for a dependency); else nothing."""
        import contextlib

        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return contextlib.nullcontext()
        return _torchrun_group(self, self.wait)

    def run(self, cell: Cell, counter: str) -> CellOutcome:
        plan = None
        if self.is_main:
            try:
                plan = self._decide(cell, counter)
            except BaseException as err:
                # A user error preparing a dataset, an interrupt: the other processes stop too.
                self._share({"abort": f"{type(err).__name__}: {err}"})
                raise
        plan = self._share(plan)
        if "abort" in plan:
            raise RuntimeError(f"rank 0 stopped the grid at {cell.key}: {plan['abort']}")
        if plan["outcome"] is not None:
            self.outcomes[cell.key] = plan["outcome"]
            return CellOutcome(cell.key, plan["outcome"], error=plan.get("error"))
        return self._execute(cell, plan)

    # -- rank 0: what to do with a cell -------------------------------------------------------------

    def _decide(self, cell: Cell, counter: str) -> dict[str, Any]:
        directory = cell_dir(self.grid, cell)
        state = self._state(cell)
        label = f"{counter} {cell.key}"
        kept = {"done": "skipped", "failed": "failed", "collapsed": "collapsed", "running": "locked"}
        forced = {"done": ("all",), "failed": ("failed", "all"), "collapsed": ("all",)}
        if state in kept and self.rerun not in forced.get(state, ()):
            holder = is_locked(directory) if state == "running" else None
            error = (
                f"locked by {holder.describe()}" if holder else (read_cell_json(directory) or {}).get("error")
            )
            if state == "done":
                logger.info(f"{label}: done")
            else:
                logger.warning(f"{label}: {state}" + (f" ({error})" if error else "") + "; left as it is")
            return {"outcome": kept[state], "error": error}
        if cell.depends_on:
            blocked = self._wait_for_dependency(cell, label)
            if blocked:
                return {"outcome": "blocked", "error": blocked}
        lock = CellLock(directory)
        if not lock.acquire():
            logger.warning(f"{label}: locked by {lock.holder.describe()}; skipped")
            return {"outcome": "locked", "error": f"locked by {lock.holder.describe()}"}
        self._lock = lock
        try:
            # Again, under the lock: another process may have just finished it.
            state = self._state(cell, holding_lock=True)
            if state == "done" and self.rerun != "all":
                self._release()
                return {"outcome": "skipped", "error": None}
            fresh = state in ("changed", "collapsed") or self.rerun == "all"
            dataset = self._dataset(cell.dataset)
        except BaseException:
            self._release()
            raise
        what = {"train": "training", "evaluate": "evaluating", "popularity": "ranking by popularity"}
        how = {True: " from scratch", False: " (resuming from last/)" if state == "resumable" else ""}
        logger.info(f"{label}: {what[cell.kind]}{how[fresh and state != 'pending']}")
        return {"outcome": None, "fresh": fresh, "dataset": str(dataset)}

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _state(self, cell: Cell, holding_lock: bool = False) -> str:
        dependency = self.by_key[cell.depends_on] if cell.depends_on else None
        dep_state = self._state(dependency) if dependency else None
        dep_record = read_cell_json(cell_dir(self.grid, dependency)) if dependency else None
        return cell_state(cell_dir(self.grid, cell), self.grid.config_hash(cell), dep_state, dep_record,
                          holding_lock=holding_lock)  # fmt: skip

    def _wait_for_dependency(self, cell: Cell, label: str) -> str | None:
        """None when the dependency is done (now or after waiting), else why the cell is blocked."""
        dependency = self.by_key[cell.depends_on]
        seen = self.outcomes.get(dependency.key)
        if seen in ("failed", "collapsed", "blocked"):  # this invocation saw it end so
            return f"its dependency {dependency.key} is {seen}"
        # A dependency another process may still run or rerun is waited for; one that needs someone to
        # act (a failure, a collapse, a refused change) is not, unless --rerun may be acting on it.
        final = {"failed", "collapsed", "blocked", "changed"} - set(_RERUN_STATES.get(self.rerun, ()))

        def ready() -> bool | None:
            state = self._state(dependency)
            if state == "done":
                return True
            if state in final:
                return False
            # Unsharded, only a process holding the dependency's lock may still finish it (another
            # invocation); a dependency of a stage not selected (--stage) is nobody's to run.
            return None if self.sharded or state == "running" else False

        answer = ready()
        if answer is None:
            logger.info(f"{label}: waiting for {dependency.key} (another process or shard runs it; at most "
                        f"{self.wait:.0f} s)")  # fmt: skip
            answer = wait_for(ready, self.wait, self.poll)
        if answer:
            return None
        reason = f"its dependency {dependency.key} is {self._state(dependency)}"
        if answer is None:
            reason += f" after waiting {self.wait:.0f} s"
        logger.warning(f"{label}: blocked: {reason}")
        return reason

    def _dataset(self, name: str) -> Path:
        if name not in self.datasets:
            self.datasets[name] = prepare_dataset(
                Path(self.grid.output_dir), name, self.grid.datasets[name],
                replace_changed=self.rerun in ("changed", "all"), wait=self.wait, poll=self.poll,
                progress=self.progress,
            )  # fmt: skip
        return self.datasets[name]

    # -- every process: running it ------------------------------------------------------------------

    def _execute(self, cell: Cell, plan: dict[str, Any]) -> CellOutcome:
        from transrec.training.trainer import TrainingCollapsed

        directory = cell_dir(self.grid, cell)
        dependency = self.by_key[cell.depends_on] if cell.depends_on else None
        checkpoint = cell_dir(self.grid, dependency) / "best" if dependency else None
        record = self._record(cell, dependency) if self.is_main else {}
        started = time.perf_counter()
        status, error, details = None, None, {}
        try:
            if self.is_main:
                if plan["fresh"] and cell.kind != "train":
                    remove_test_outputs(directory)
                write_cell_json(directory, record)
            resume = "never" if plan["fresh"] else "auto"  # never: the trainer removes the old run files
            config = _tracked(self.grid, cell, self.grid.train_config(cell, directory, plan["dataset"],
                                                                      checkpoint, resume))  # fmt: skip
            if cell.kind == "train":
                details = run_train_cell(config, self.progress and self.is_main)
            elif cell.kind == "evaluate":
                details = run_evaluate_cell(config, checkpoint)
            else:
                details = run_popularity_cell(config)
            status = "done"
        except TrainingCollapsed as err:
            status, error = "collapsed", str(err)
        except Exception as err:  # one cell's failure must not end the grid
            status, error = "failed", f"{type(err).__name__}: {err}"
            if self.is_main:
                logger.error(f"      {cell.key} failed: {error}\n{traceback.format_exc()}")
        finally:
            # Interrupted (KeyboardInterrupt, SystemExit): status stays None and cell.json `running`, so
            # that the cell resumes from last/ next time; the lock goes, a kill would leave it stale.
            seconds = time.perf_counter() - started
            try:
                if self.is_main and status is not None:
                    ended = {
                        "status": status,
                        "error": error,
                        "finished": now_iso(),
                        "seconds": round(seconds, 2),
                    }
                    write_cell_json(directory, {**record, **details, **ended})
            finally:
                if self.is_main:
                    self._release()
        if status == "done":
            logger.info(f"      {cell.key}: done in {seconds:.1f} s" + _metric_note(directory))
        elif status == "collapsed":
            logger.warning(f"      {cell.key}: collapsed: {error}")
        self.outcomes[cell.key] = status
        return CellOutcome(cell.key, status, round(seconds, 2), error)

    def _record(self, cell: Cell, dependency: Cell | None) -> dict[str, Any]:
        dep_record = read_cell_json(cell_dir(self.grid, dependency)) if dependency else None
        return {
            "grid": self.grid.name, "stage": cell.stage, "kind": cell.kind, "labels": dict(cell.labels),
            "key": cell.key, "dataset": cell.dataset, "depends_on": cell.depends_on,
            "config_hash": self.grid.config_hash(cell), "status": "running", "started": now_iso(),
            "finished": None, "seconds": None, "error": None, "transrec_version": transrec.__version__,
            "dependency": dependency_stamp(dep_record),
        }  # fmt: skip

    def _share(self, plan: dict[str, Any] | None) -> dict[str, Any]:
        if self.world_size == 1:
            return plan
        import torch.distributed as dist

        box = [plan]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _tracked(grid, cell: Cell, config):
    """With ``tracking`` on, one store per grid: ``tracking_config`` defaults to the directory
    ``<output_dir>/tracking``, the experiment (MLflow, W&B) named after the grid and each run after its
    cell's key (the trainer's default, the run folder's last part, is ``seed=0`` in many stages). Values
    the grid sets are kept; these keys change no weight."""
    from dataclasses import replace

    if config.tracking == "none":
        return config
    given, defaults = config.tracking_config, type(config.tracking_config)()
    names = {
        "dir": given.dir or str(Path(grid.output_dir) / "tracking"),
        # MLflow's experiment, W&B's project; TensorBoard has none (training.validation refuses one).
        "experiment": grid.name
        if config.tracking in ("mlflow", "wandb") and given.experiment == defaults.experiment
        else given.experiment,
        "run_name": given.run_name or cell.key,
    }
    return replace(config, tracking_config=replace(given, **names))


def _metric_note(directory: Path) -> str:
    import json

    path = directory / "test_metrics.json"
    if not path.is_file():
        return ""
    metrics = json.loads(path.read_text())
    return f", test NDCG@10 {metrics['NDCG@10']:.4f}" if "NDCG@10" in metrics else ""


class _torchrun_group:
    """Join torchrun's process group with a timeout longer than ``wait``, for the whole grid."""

    def __init__(self, runner: _GridRunner, wait: float) -> None:
        self.runner, self.wait, self.owns = runner, wait, False

    def __enter__(self) -> None:
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            cuda = torch.cuda.is_available() and self.runner.grid.base.get("device", "auto") != "cpu"
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=self.wait + 3600))
            self.owns = True
        self.runner.rank, self.runner.world_size = dist.get_rank(), dist.get_world_size()

    def __exit__(self, *exc: object) -> None:
        import torch.distributed as dist

        if self.owns:
            dist.destroy_process_group()
