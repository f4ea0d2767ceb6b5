"""A grid under torchrun (2 CPU processes, gloo): rank 0 decides and writes, every process trains and
evaluates each cell together (DDP, sharded evaluation), and both see the same outcomes."""

import copy
import json
import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.bench.tiny_grids import GRID, tiny_grid


def grid_of(out):
    pretrain, zeroshot, popularity = (copy.deepcopy(GRID["stages"][i]) for i in (0, 2, 3))
    pretrain["set"]["epochs"], pretrain["axes"], zeroshot["axes"] = 1, {"seed": [0]}, {"seed": [0]}
    return tiny_grid(out, stages=[pretrain, zeroshot, popularity])


def _run_in_group(rank, world_size, init_file, out, report):
    from transrec.bench.runner import run_grid
    from transrec.training import checkpoint, trainer
    from transrec.utils.distributed import DistributedContext

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    os.environ["WORLD_SIZE"] = str(world_size)  # what torchrun sets: run_grid joins the group
    seen = []
    train, evaluate = trainer.train, checkpoint.checkpoint_evaluation
    trainer.train = lambda *a, **k: (
        seen.append(("train", DistributedContext.current().world_size)) or train(*a, **k)
    )
    checkpoint.checkpoint_evaluation = lambda *a, **k: seen.append(("evaluate", 0)) or evaluate(*a, **k)
    try:
        summary = run_grid(grid_of(out), progress=False)
        outcomes = [(c.key, c.outcome) for c in summary.cells]
        report.joinpath(f"rank{rank}.json").write_text(json.dumps({"outcomes": outcomes, "seen": seen}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # about 50 s: two process groups of two processes each
def test_under_torchrun_every_process_runs_each_cell_and_rank_0_writes(tmp_path):
    out, report = tmp_path / "tiny", tmp_path / "report"
    report.mkdir()
    mp.spawn(_run_in_group, args=(2, tmp_path / "init", out, report), nprocs=2)
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    expected = [["pretrain/seed=0", "done"], ["zeroshot/seed=0", "done"], ["popularity/default", "done"]]
    assert ranks[0]["outcomes"] == ranks[1]["outcomes"] == expected
    assert ranks[0]["seen"] == ranks[1]["seen"] == [["train", 2], ["evaluate", 0]]  # DDP, sharded evaluation
    for key, _ in expected:
        assert json.loads((out / key / "cell.json").read_text())["status"] == "done"
        assert not (out / key / ".lock").exists()
    # Rerun: every process finds every cell done.
    mp.spawn(_run_in_group, args=(2, tmp_path / "init2", out, report), nprocs=2)
    again = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert again[0]["outcomes"] == again[1]["outcomes"] == [[k, "skipped"] for k, _ in expected]
    assert again[0]["seen"] == again[1]["seen"] == []
