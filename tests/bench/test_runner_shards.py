"""Shards running at the same time: each runs its share once, and a cell whose dependency belongs to
another shard waits for it (or reports ``blocked`` when the wait runs out)."""

import copy
import threading
import time

from tests.bench.test_runner import recording_train
from tests.bench.tiny_grids import GRID, tiny_grid
from transrec.bench.runner import cell_states, run_grid
from transrec.bench.shard import Shard


def crossed_grid(out):
    """pretrain seeds [0, 1] (one epoch) and zeroshot seeds [1, 0]: each shard's zero-shot cell evaluates
    the pre-training of the other shard."""
    pretrain, zeroshot = copy.deepcopy(GRID["stages"][0]), copy.deepcopy(GRID["stages"][2])
    pretrain["set"]["epochs"] = 1
    zeroshot["axes"] = {"seed": [1, 0]}
    return tiny_grid(out, stages=[pretrain, zeroshot])


def test_two_shards_at_once_run_every_cell_once_and_wait_for_each_other(tmp_path, monkeypatch, caplog):
    grid = crossed_grid(tmp_path / "tiny")
    calls = recording_train(monkeypatch)
    summaries = {}

    def shard(index):
        summaries[index] = run_grid(grid, shard=Shard(index, 2), wait=120, poll=0.1, progress=False)

    with caplog.at_level("INFO", logger="transrec.bench.runner"):
        other = threading.Thread(target=shard, args=(1,))
        other.start()
        shard(0)
        other.join(timeout=300)
    assert [c.key for c in summaries[0].cells] == ["pretrain/seed=0", "zeroshot/seed=1"]
    assert [c.key for c in summaries[1].cells] == ["pretrain/seed=1", "zeroshot/seed=0"]
    assert summaries[0].ok and summaries[1].ok
    assert sorted(calls) == [("pretrain/seed=0", "auto"), ("pretrain/seed=1", "auto")]  # each once
    assert set(cell_states(grid).values()) == {"done"}
    assert "waiting for pretrain/seed=" in caplog.text  # at least one shard had to wait for the other


def test_a_dependency_no_shard_runs_blocks_its_cell_when_the_wait_runs_out(tmp_path):
    grid = crossed_grid(tmp_path / "tiny")
    summary = run_grid(grid, shard=Shard(0, 2), wait=0.5, poll=0.1, progress=False)
    assert [(c.key, c.outcome) for c in summary.cells] == [
        ("pretrain/seed=0", "done"),
        ("zeroshot/seed=1", "blocked"),
    ]
    assert "pending after waiting 0 s" in summary.cells[1].error
    assert not summary.ok


def test_unsharded_a_dependency_nobody_runs_blocks_at_once(tmp_path):
    grid = crossed_grid(tmp_path / "tiny")
    started = time.monotonic()
    summary = run_grid(grid, stages=["zeroshot"], wait=60, poll=0.1, progress=False)
    assert [c.outcome for c in summary.cells] == ["blocked", "blocked"] and time.monotonic() - started < 30
    assert summary.cells[0].error == "its dependency pretrain/seed=1 is pending"
