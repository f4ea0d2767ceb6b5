"""Spreading one grid over many invocations: ``--shard i/n``, the array index of cluster schedulers, each
shard's share of the cells, and waiting for a dependency another shard runs.

Every shard takes, in each stage, the cells at positions ``i, i + n, i + 2n, ...`` of that stage in
``Grid.cells()`` (round-robin per stage, so that every stage is spread over all shards). The share depends
only on the grid and on ``(i, n)``: a shard started again runs the same cells. A cell whose dependency
belongs to another shard waits for it (``wait_for``), so a whole job array may start at once.

Without ``--shard``, the array index comes from the environment (``shard_from_env``), first match wins:

    SLURM     SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN (default 0),
              SLURM_ARRAY_TASK_STEP (default 1): shard (ID - MIN) / STEP of COUNT. A list of indices
              that is not an evenly stepped range (``--array=0,5,9``) is refused: use --shard.
    SGE/UGE   SGE_TASK_ID (``undefined`` outside an array), SGE_TASK_FIRST, SGE_TASK_LAST,
              SGE_TASK_STEPSIZE: shard (ID - FIRST) / STEP of (LAST - FIRST) / STEP + 1.
    LSF       LSB_JOBINDEX (0 outside an array), LSB_JOBINDEX_END, LSB_JOBINDEX_STEP (default 1); LSF
              exports no first index, so the array must start at 1 (``-J "name[1-N]"``, LSF's default):
              shard (INDEX - 1) / STEP of (END - 1) / STEP + 1.
    PBS Pro   PBS_ARRAY_INDEX; Torque PBS_ARRAYID; Kubernetes indexed Jobs JOB_COMPLETION_INDEX. None of
              them exports the array's size: set TRANSREC_SHARD_COUNT=n (and TRANSREC_SHARD_FIRST, the
              first index, when it is not 0), or pass --shard.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from transrec.errors import UsageError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``; ``source`` says where it came from (for the log)."""

    index: int
    count: int
    source: str = "--shard"

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"shard {self.index}/{self.count} (from {self.source}): the index must be in "
                             f"0..count-1 and the count at least 1")  # fmt: skip

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"i/n"`` (0-based ``i``) -> ``Shard``; UsageError naming the problem otherwise."""
    parts = str(text).split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        message = f"--shard must be i/n with whole numbers, 0 <= i < n (e.g. 0/4), got {text!r}"
        raise UsageError(message) from None
    return Shard(index, count)


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise UsageError(f"{name} is not set; pass --shard i/n")
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number; pass --shard i/n") from None


def _stepped(name: str, task: int, first: int, last: int, step: int) -> Shard:
    if step < 1 or (task - first) % step or not first <= task <= last:
        raise UsageError(f"{name}: index {task} is not in the array {first}-{last}:{step}; pass --shard i/n")
    return Shard((task - first) // step, (last - first) // step + 1, name)


def _slurm(env: Mapping[str, str]) -> Shard:
    task, count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
    first, step = _int(env, "SLURM_ARRAY_TASK_MIN", 0), _int(env, "SLURM_ARRAY_TASK_STEP", 1)
    last = first + (count - 1) * step
    if _int(env, "SLURM_ARRAY_TASK_MAX", last) != last:
        raise UsageError(
            f"the Slurm array ({count} tasks from {first} to {env['SLURM_ARRAY_TASK_MAX']}) is not an evenly "
            "stepped range, so a task's index does not give its shard; pass --shard i/n"
        )
    return _stepped("SLURM_ARRAY_TASK_ID", task, first, last, step)


def _sge(env: Mapping[str, str]) -> Shard:
    task = _int(env, "SGE_TASK_ID")
    first, last = _int(env, "SGE_TASK_FIRST", 1), _int(env, "SGE_TASK_LAST")
    return _stepped("SGE_TASK_ID", task, first, last, _int(env, "SGE_TASK_STEPSIZE", 1))


def _lsf(env: Mapping[str, str]) -> Shard:
    task = _int(env, "LSB_JOBINDEX")
    return _stepped("LSB_JOBINDEX", task, 1, _int(env, "LSB_JOBINDEX_END"), _int(env, "LSB_JOBINDEX_STEP", 1))


def _counted(name: str) -> Callable[[Mapping[str, str]], Shard]:
    def shard(env: Mapping[str, str]) -> Shard:
        if not env.get("TRANSREC_SHARD_COUNT"):
            raise UsageError(f"{name} is set, but this scheduler does not export the array's size: set "
                             "TRANSREC_SHARD_COUNT to the number of tasks, or pass --shard i/n")  # fmt: skip
        first = _int(env, "TRANSREC_SHARD_FIRST", 0)
        return Shard(_int(env, name) - first, _int(env, "TRANSREC_SHARD_COUNT"), name)

    return shard


#: (variable whose presence selects the scheduler, how to read the shard), in the order they are tried;
#: a variable set to one of ``_OUTSIDE_ARRAY`` means "not an array task".
SCHEDULERS: tuple[tuple[str, Callable[[Mapping[str, str]], Shard]], ...] = (
    ("SLURM_ARRAY_TASK_ID", _slurm),
    ("SGE_TASK_ID", _sge),
    ("LSB_JOBINDEX", _lsf),
    ("PBS_ARRAY_INDEX", _counted("PBS_ARRAY_INDEX")),
    ("PBS_ARRAYID", _counted("PBS_ARRAYID")),
    ("JOB_COMPLETION_INDEX", _counted("JOB_COMPLETION_INDEX")),
)
_OUTSIDE_ARRAY = {"SGE_TASK_ID": "undefined", "LSB_JOBINDEX": "0"}


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard of this scheduler array task (module docstring), or None outside an array."""
    env = os.environ if env is None else env
    for name, read in SCHEDULERS:
        value = env.get(name)
        if value in (None, "") or value == _OUTSIDE_ARRAY.get(name):
            continue
        return read(env)
    return None


def shard_cells(cells: Sequence[T], shard: Shard | None, stage_of: Callable[[T], str]) -> list[T]:
    """This shard's cells, in their order: in each stage, positions ``index, index + count, ...``."""
    if shard is None or shard.count == 1:
        return list(cells)
    position: dict[str, int] = {}
    mine = []
    for cell in cells:
        stage = stage_of(cell)
        at = position.get(stage, 0)
        position[stage] = at + 1
        if at % shard.count == shard.index:
            mine.append(cell)
    return mine


def wait_for(
    check: Callable[[], bool | None],
    timeout: float,
    poll: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool | None:
    """Call ``check`` every ``poll`` seconds until it returns True (ready) or False (it never will be),
    for at most ``timeout`` seconds; returns that answer, or None when the time ran out."""
    deadline = clock() + timeout
    while True:
        answer = check()
        if answer is not None:
            return answer
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(poll, left))
