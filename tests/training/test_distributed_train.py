"""DDP training with 2 CPU processes (gloo): it completes, keeps the replicas identical, writes from rank 0
only, and resumes."""

import json
import math

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.item_encoders.image import tiny_vit
from transrec.models.item_encoders.text import tiny_text
from transrec.models.recommender import ModelConfig
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.step import TrainingObjective
from transrec.training.trainer import train
from transrec.utils.distributed import DistributedContext, gather_rows


def _config(dataset, out, epochs, **overrides):
    items = {"text": tiny_text(vocab_size=200, hidden_size=16, layers=1),
             "image": tiny_vit(image_size=32, hidden_size=16, layers=1)}  # fmt: skip
    model = ModelConfig(d_model=16, max_len=8, item_encoder="mom", item_encoder_config=items,
                        user_encoder_config={"n_layers": 1, "n_heads": 2})  # fmt: skip
    run = {
        "epochs": epochs,
        "batch_size": 8,
        "patience": 10,
        "seed": 3,
        "device": "cpu",
        "collapse_factor": 0.0,
        **overrides,
    }
    return TrainConfig(
        dataset=str(dataset), output_dir=str(out), model=model, optim=OptimConfig(lr=3e-3), **run
    )


def _train_in_group(rank, world_size, init_file, dataset, out, epochs, report, overrides):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    sums = []

    def record(event, info):
        if event == "epoch":  # a checksum of the replica after each epoch
            sums.append(float(sum(p.detach().double().sum() for p in info["model"].parameters())))

    gathered = []
    original = TrainingObjective._inbatch_across_processes
    TrainingObjective._inbatch_across_processes = lambda *a: gathered.append(1) or original(*a)
    try:
        result = train(_config(dataset, out, epochs, **overrides), progress=False, hook=record)
        summary = {"test": result.test, "sums": sums, "gathered": len(gathered)}
        report.joinpath(f"rank{rank}.json").write_text(json.dumps(summary))
    finally:
        TrainingObjective._inbatch_across_processes = original
        dist.destroy_process_group()


def _spawn(tmp_path, dataset, out, epochs, tag, **overrides):
    report = tmp_path / tag
    report.mkdir()
    args = (2, tmp_path / f"init-{tag}", dataset, out, epochs, report, overrides)
    mp.spawn(_train_in_group, args=args, nprocs=2)
    return [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_train_identical_replicas_and_resume(tmp_path):
    world = make_world(SyntheticWorldConfig.tiny(seed=7))
    prep = PrepareConfig(user_k=3, item_k=3, image_size=32, image_format="raw", hash_vocab_size=200)
    data = prepare(world.source, prep, tmp_path / "data", progress=False)
    out = tmp_path / "run"

    first = _spawn(tmp_path, data.path, out, 2, "first")
    assert first[0]["test"] == first[1]["test"]
    assert first[0]["sums"] == first[1]["sums"] and len(first[0]["sums"]) == 2  # gradients were averaged
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads((out / "result.json").read_text())["status"] == "finished"
    assert (out / "best" / "model.safetensors").is_file() and not (out / "trunk_cache").exists()

    resumed = _spawn(tmp_path, data.path, out, 3, "resumed")  # the same run, one epoch more
    assert resumed[0]["test"] == resumed[1]["test"] and len(resumed[0]["sums"]) == 1
    assert (out / "metrics.jsonl").read_text().splitlines()[:2] == lines
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    state = json.loads((out / "last" / "trainer_state.json").read_text())["trainer"]
    assert state["epoch"] == 3 and state["step"] == 3 * -(-data.n_users // 2 // 8)


def test_in_batch_negatives_are_gathered_from_every_process(tmp_path):
    world = make_world(SyntheticWorldConfig.tiny(seed=8))
    prep = PrepareConfig(user_k=3, item_k=3, image_size=32, image_format="raw", hash_vocab_size=200)
    data = prepare(world.source, prep, tmp_path / "data", progress=False)
    ranks = _spawn(tmp_path, data.path, tmp_path / "run", 2, "inbatch", objective="inbatch", logq=True)
    assert ranks[0]["gathered"] > 0 and ranks[0]["gathered"] == ranks[1]["gathered"]
    assert ranks[0]["sums"] == ranks[1]["sums"]  # the gathered negatives' gradients reached every replica
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all(math.isfinite(loss) for loss in losses) and losses[1] < losses[0]


def _gather_gradient(rank, world_size, init_file, report):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        rows = torch.arange(1.0, 3.0 + rank * 2).view(-1, 1).requires_grad_()  # 2 rows on rank 0, 4 on rank 1
        gathered, offset = gather_rows(rows, DistributedContext.current())
        weights = torch.arange(6.0).view(-1, 1) * (10**rank)  # each process weighs every row its own way
        (gathered * weights).sum().backward()
        report.joinpath(f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "gathered": gathered.flatten().tolist(),
                    "offset": offset,
                    "grad": rows.grad.flatten().tolist(),
                }
            )
        )
    finally:
        dist.destroy_process_group()


def test_gathered_rows_get_the_gradient_of_every_process(tmp_path):
    mp.spawn(_gather_gradient, args=(2, tmp_path / "init", tmp_path), nprocs=2)
    zero, one = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert zero["gathered"] == one["gathered"] == [1.0, 2.0, 1.0, 2.0, 3.0, 4.0]
    assert (zero["offset"], one["offset"]) == (0, 2)
    # d/d row_i of sum over processes p of weight_p[i] * row_i = i * (1 + 10)
    assert zero["grad"] == [0.0, 11.0] and one["grad"] == [22.0, 33.0, 44.0, 55.0]
