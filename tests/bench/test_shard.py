"""Shards: ``--shard i/n``, the array index of each scheduler from its environment, every cell in exactly
one shard (round-robin per stage, stable), and waiting for a dependency."""

import pytest

from tests.bench.tiny_grids import CELLS, tiny_grid
from transrec.bench.runner import select_cells
from transrec.bench.shard import Shard, parse_shard, shard_from_env, wait_for
from transrec.errors import UsageError


def test_parse_shard_reads_i_of_n_and_names_a_bad_one():
    assert parse_shard("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/2", "1", "a/b", "1/0", "1/2/3"):
        with pytest.raises(UsageError, match="shard"):
            parse_shard(bad)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # Slurm: --array=0-3 -> task 2 of 4; --array=1-7:2 -> index 5 is the third of four.
        ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
          "SLURM_ARRAY_TASK_MAX": "3"}, (2, 4)),
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
          "SLURM_ARRAY_TASK_MAX": "7", "SLURM_ARRAY_TASK_STEP": "2"}, (2, 4)),
        # SGE: qsub -t 1-10:3 -> tasks 1, 4, 7, 10; task 7 is the third of four.
        ({"SGE_TASK_ID": "7", "SGE_TASK_FIRST": "1", "SGE_TASK_LAST": "10", "SGE_TASK_STEPSIZE": "3"},
         (2, 4)),
        # LSF: -J "x[1-6]" -> index 6 is the last of six.
        ({"LSB_JOBINDEX": "6", "LSB_JOBINDEX_END": "6"}, (5, 6)),
        # PBS Pro (-J 1-8) and Torque (-t 0-7) export no size: TRANSREC_SHARD_COUNT (and _FIRST) give it.
        ({"PBS_ARRAY_INDEX": "3", "TRANSREC_SHARD_COUNT": "8", "TRANSREC_SHARD_FIRST": "1"}, (2, 8)),
        ({"PBS_ARRAYID": "7", "TRANSREC_SHARD_COUNT": "8"}, (7, 8)),
        ({"JOB_COMPLETION_INDEX": "0", "TRANSREC_SHARD_COUNT": "3"}, (0, 3)),
    ],
)  # fmt: skip
def test_each_scheduler_array_index_becomes_a_shard(env, expected):
    shard = shard_from_env(env)
    assert (shard.index, shard.count) == expected


def test_outside_an_array_there_is_no_shard():
    assert shard_from_env({}) is None
    assert shard_from_env({"SGE_TASK_ID": "undefined", "LSB_JOBINDEX": "0", "PATH": "/bin"}) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PBS_ARRAY_INDEX": "3"}, "TRANSREC_SHARD_COUNT"),
        # --array=0,5,9: three tasks that are not an evenly stepped range.
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
          "SLURM_ARRAY_TASK_MAX": "9"}, "evenly stepped"),
        ({"SGE_TASK_ID": "2", "SGE_TASK_FIRST": "1", "SGE_TASK_LAST": "9", "SGE_TASK_STEPSIZE": "4"},
         "not in"),
        ({"LSB_JOBINDEX": "x", "LSB_JOBINDEX_END": "4"}, "whole number"),
    ],
)  # fmt: skip
def test_an_array_index_that_gives_no_shard_is_refused_with_the_fix(env, message):
    with pytest.raises(UsageError, match=message):
        shard_from_env(env)


def test_shards_cover_every_cell_once_round_robin_within_each_stage(tmp_path):
    grid = tiny_grid(tmp_path)
    shares = [[c.key for c in select_cells(grid, Shard(i, 2))] for i in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(CELLS)
    assert not set(shares[0]) & set(shares[1])
    # Every stage is spread: its cells alternate between the shards, in grid order.
    assert shares[0] == [CELLS[i] for i in (0, 2, 4, 6, 8)]
    assert shares[1] == [CELLS[i] for i in (1, 3, 5, 7)]
    # Stable: the same share again, and the share of one stage does not depend on --stage.
    assert [c.key for c in select_cells(tiny_grid(tmp_path), Shard(0, 2))] == shares[0]
    assert [c.key for c in select_cells(grid, Shard(1, 2), ["finetune"])] == [CELLS[3], CELLS[5]]
    three = [[c.key for c in select_cells(grid, Shard(i, 3))] for i in range(3)]
    assert sorted(key for share in three for key in share) == sorted(CELLS)
    # Per stage, not over the whole grid: each stage's first cell goes to shard 0.
    assert three[0] == [CELLS[i] for i in (0, 2, 5, 6, 8)]


def test_wait_for_polls_until_ready_gives_up_at_the_timeout_and_stops_on_a_final_no():
    now = [0.0]
    sleep = lambda seconds: now.__setitem__(0, now[0] + seconds)  # noqa: E731
    clock = lambda: now[0]  # noqa: E731
    answers = iter([None, None, True])
    assert wait_for(lambda: next(answers), timeout=100, poll=5, sleep=sleep, clock=clock) is True
    assert now[0] == 10
    now[0] = 0.0
    assert wait_for(lambda: None, timeout=12, poll=5, sleep=sleep, clock=clock) is None
    assert now[0] == 12
    calls = []
    assert wait_for(lambda: calls.append(1) or False, timeout=100, poll=5, sleep=sleep, clock=clock) is False
    assert len(calls) == 1
