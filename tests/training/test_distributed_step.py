"""One optimizer step in 2 CPU processes (DDP over gloo) is one step in 1 process on the union of the two
processes' batches: the same gradients, the same weights after AdamW's update.

The runs are whole ``train()`` calls (the real ``make_loader`` sharding, ``distributed_step``,
``build_optimizer`` and the trainer's backward and step), with one epoch of exactly one step: the
per-process batch holds half the users in 2 processes, the 1-process batch all of them. The test sees the
step through hooks on the optimizer the trainer builds: the gradients it steps with, and the weights after.

Why equality is expected:
    - negatives (and everything random in a window) are a function of (seed, epoch, user), not of the
      process (``training.batches``), so the union batch holds the same negatives; dropout is off;
    - the loss of a batch is a mean over its positions with a target, and DDP averages the processes'
      gradients. The average of the two processes' means equals the mean over the union only when both
      hold the same number of positions: every user here has more than ``max_len`` training items, so
      each window has exactly ``max_len`` targets, and the 2 processes hold ``n_users / 2`` users each;
    - ``inbatch``: a process's softmax runs over the distinct items gathered from every process; an item
      in both processes' batches (most items here) must count once, as in the union batch;
    - gradients are not clipped (``grad_clip: 0``): clipping rescales to a fixed norm and would hide a
      gradient of the wrong scale.

AdamW's first step moves each weight by ``lr * g / (|g| + eps)``, about ``lr * sign(g)`` wherever
``|g| >> eps``: a gradient of the wrong scale (summed instead of averaged) shows in the weights only where
gradients are as small as ``eps``, so the gradients are compared directly too.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import PreparedDataset
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.recommender import ModelConfig
from transrec.training import trainer
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.step import TrainingObjective

OBJECTIVES = ("bce", "inbatch")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> PreparedDataset:
    world = make_world(SyntheticWorldConfig.tiny(seed=7))
    prep = PrepareConfig(user_k=3, item_k=3, image_size=16, image_format="raw")
    return prepare(world.source, prep, tmp_path_factory.mktemp("step") / "data", progress=False)


def step_config(dataset: PreparedDataset, out: Path, batch_size: int, objective: str) -> TrainConfig:
    """One epoch of one step: ``batch_size`` users per process and a window that every user fills. ID
    items: a process that builds no Hugging Face model never imports transformers (seconds to start)."""
    shortest = int((dataset.split.train_ends - dataset.split.starts).min())
    model = ModelConfig(d_model=16, max_len=shortest - 1, item_encoder="id",
                        user_encoder_config={"n_layers": 1, "n_heads": 2, "dropout": 0.0})  # fmt: skip
    return TrainConfig(dataset=str(dataset.path), output_dir=str(out), model=model, objective=objective,
                       epochs=1, batch_size=batch_size, seed=5, device="cpu", collapse_factor=0.0,
                       optim=OptimConfig(lr=1e-2, grad_clip=0.0))  # fmt: skip


@contextmanager
def recording_the_step(record: dict):
    """Within the context, ``train`` reports into ``record``: ``users`` and ``items`` (the user ids and
    distinct items of each batch it computed a loss on), ``grads`` (by parameter name, as the optimizer
    stepped with them), ``weights`` (after the step) and ``steps``."""
    build, loss = trainer.build_optimizer, TrainingObjective.loss
    record.update(users=[], items=[], steps=0)

    def build_recorded(model, config):
        optimizer = build(model, config)
        names = {id(p): name for name, p in model.named_parameters()}

        def before(opt, args, kwargs):
            record["grads"] = {
                names[id(p)]: p.grad.detach().clone()
                for group in opt.param_groups
                for p in group["params"]
                if p.grad is not None
            }

        def after(opt, args, kwargs):
            record["weights"] = {name: p.detach().clone() for name, p in model.named_parameters()}
            record["steps"] += 1

        optimizer.register_step_pre_hook(before)
        optimizer.register_step_post_hook(after)
        return optimizer

    def loss_recorded(self, model, batch):
        record["users"].append(batch["user_ids"].tolist())
        record["items"].append(batch["unique_items"].tolist())
        return loss(self, model, batch)

    trainer.build_optimizer, TrainingObjective.loss = build_recorded, loss_recorded
    try:
        yield record
    finally:
        trainer.build_optimizer, TrainingObjective.loss = build, loss


def _steps_in_group(rank, world_size, init_file, configs, report):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for name, config in configs.items():
            with recording_the_step({}) as record:
                trainer.train(config, progress=False)
            save_file({f"grad.{k}": v for k, v in record["grads"].items()}
                      | {f"weight.{k}": v for k, v in record["weights"].items()},
                      str(report / f"{name}-rank{rank}.safetensors"))  # fmt: skip
            summary = {key: record[key] for key in ("users", "items", "steps")}
            (report / f"{name}-rank{rank}.json").write_text(json.dumps(summary))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(dataset, tmp_path_factory) -> dict[str, list[dict]]:
    """Per objective and rank, what ``recording_the_step`` records of a 2-process run of one step (both
    objectives trained by one pair of processes: starting them costs more than the runs)."""
    root = tmp_path_factory.mktemp("two_processes")
    configs = {o: step_config(dataset, root / o, dataset.n_users // 2, o) for o in OBJECTIVES}
    mp.spawn(_steps_in_group, args=(2, root / "init", configs, root), nprocs=2)
    runs: dict[str, list[dict]] = {}
    for name, rank in ((o, r) for o in OBJECTIVES for r in (0, 1)):
        tensors = load_file(str(root / f"{name}-rank{rank}.safetensors"))
        runs.setdefault(name, []).append({
            **json.loads((root / f"{name}-rank{rank}.json").read_text()),
            "grads": {k.removeprefix("grad."): v for k, v in tensors.items() if k.startswith("grad.")},
            "weights": {k.removeprefix("weight."): v for k, v in tensors.items() if k.startswith("weight.")},
        })  # fmt: skip
    return runs


def assert_same_step(got: dict, expected: dict, who: str) -> None:
    assert got["grads"].keys() == expected["grads"].keys() and got["grads"], who
    for name, grad in expected["grads"].items():
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=f"{who}: grad {name}")
    for name, weight in expected["weights"].items():
        # Where the gradient is zero in exact arithmetic (the key part of the attention's qkv bias: softmax
        # ignores a shift of all of a query's logits), float rounding leaves ~1e-10 of either sign, which
        # AdamW's normalised first step turns into +-lr. Those entries are left out (their gradients were
        # compared above); every other entry moved by about lr and must agree to 1e-6.
        grad = expected["grads"].get(name)
        stepped = torch.ones_like(weight, dtype=torch.bool) if grad is None else grad.abs() >= 1e-6
        torch.testing.assert_close(
            got["weights"][name][stepped], weight[stepped], rtol=0, atol=1e-6, msg=f"{who}: weight {name}"
        )


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_a_two_process_step_is_the_one_process_step_on_the_union_batch(dataset, two_processes, tmp_path,
                                                                       objective):  # fmt: skip
    n_users = dataset.n_users
    assert n_users % 2 == 0  # no user padded in twice to even the processes out
    with recording_the_step({}) as alone:
        trainer.train(step_config(dataset, tmp_path / "one", n_users, objective), progress=False)
    assert alone["steps"] == 1 and sorted(alone["users"][0]) == list(range(n_users))

    ranks = two_processes[objective]
    # Each process took its own half of the users, in one step.
    assert [r["steps"] for r in ranks] == [1, 1] and [len(r["users"]) for r in ranks] == [1, 1]
    halves = [set(r["users"][0]) for r in ranks]
    assert len(halves[0]) == len(halves[1]) == n_users // 2 and halves[0] | halves[1] == set(range(n_users))
    shared = set(ranks[0]["items"][0]) & set(ranks[1]["items"][0])
    assert len(shared) > 5  # items in both processes' batches: the gathered softmax must count them once
    for rank, got in enumerate(ranks):
        assert_same_step(got, alone, f"rank {rank}")
    assert np.isfinite([g.abs().sum().item() for g in alone["grads"].values()]).all()
