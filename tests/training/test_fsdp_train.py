"""FSDP training (``parallel: fsdp``) with 2 CPU processes (gloo): one epoch equals a DDP epoch (losses,
weights and AdamW moments; in the default suite), and (slow) it completes, its checkpoints are whole and
load into a plain model that evaluates alike in one process, it resumes to the uninterrupted run's
metrics, and its losses follow a DDP run's on the same seed, in float32 and under bf16 autocast.

Each group of runs shares one pair of processes (starting them costs more than the runs). Measured on 2
cores under a load average of 7-9: the default test 17-26 s (ID model, 4 one-epoch runs), the slow ones
30-45 s (mom encoder, 7 runs), too long for the default suite.
"""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.item_encoders.image import tiny_vit
from transrec.models.item_encoders.text import tiny_text
from transrec.models.recommender import WEIGHTS_FILE, ModelConfig, SequentialRecommender
from transrec.training.checkpoint import OPTIMIZER_FILE, evaluate_checkpoint
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.trainer import build_optimizer, train

# name, run directory, epochs, overrides; "interrupted" then "resumed" is the "fsdp" run killed after
# epoch 1 and started again, "again" starts it once more when it has finished (it returns the stored
# result).
# A small grad_clip, so that every step clips (the global norm is sharded).
RUNS = [
    ("fsdp", "fsdp", 2, {"parallel": "fsdp"}),
    ("ddp", "ddp", 2, {"parallel": "ddp"}),
    ("interrupted", "resumed", 1, {"parallel": "fsdp"}),
    ("resumed", "resumed", 2, {"parallel": "fsdp"}),
    ("again", "resumed", 2, {"parallel": "fsdp"}),
    ("fsdp_bf16", "fsdp_bf16", 1, {"parallel": "fsdp", "precision": "bf16"}),
    ("ddp_bf16", "ddp_bf16", 1, {"parallel": "ddp", "precision": "bf16"}),
]


def _config(dataset, out, epochs, grad_clip=0.05, items="mom", **overrides):
    """The ``mom`` encoder over a tiny BERT and ViT, or with ``items="id"`` ID embeddings (a process that
    never builds a Hugging Face model never imports transformers: 3-15 s less to start, on a busy disk)."""
    mom = {"text": tiny_text(vocab_size=200, hidden_size=16, layers=1),
           "image": tiny_vit(image_size=32, hidden_size=16, layers=1)} if items == "mom" else {}  # fmt: skip
    model = ModelConfig(d_model=16, max_len=8, item_encoder=items, item_encoder_config=mom,
                        user_encoder_config={"n_layers": 1, "n_heads": 2})  # fmt: skip
    optim = OptimConfig(lr=3e-3, grad_clip=grad_clip)
    return TrainConfig(
        dataset=str(dataset), output_dir=str(out), model=model, optim=optim, epochs=epochs, batch_size=8,
        patience=10, seed=3, device="cpu", collapse_factor=0.0, **overrides,
    )  # fmt: skip


class _Record:
    """A ``train`` hook keeping each step's loss and, after each epoch, a checksum of the model as the
    evaluation sees it (whole, in every process)."""

    def __init__(self) -> None:
        self.losses, self.sums = [], []

    def __call__(self, event, info):
        if event == "step":
            self.losses.append(info["loss"])
        else:
            self.sums.append(float(sum(p.detach().double().sum() for p in info["model"].parameters())))


def _all_runs(rank, world_size, init_file, dataset, root, runs, evaluate_alone):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)  # two processes on a few shared cores: no oversubscribed thread pools
    try:
        report = {}
        for name, directory, epochs, overrides in runs:
            record, config = _Record(), _config(dataset, root / directory, epochs, **overrides)
            result = train(config, progress=False, hook=record)
            report[name] = {"test": result.test, "losses": record.losses, "sums": record.sums}
    finally:
        dist.destroy_process_group()
    if evaluate_alone:
        # The FSDP run's best/ evaluated by one process alone (no process group left): a plain checkpoint.
        report["alone"] = evaluate_checkpoint(root / "fsdp" / "best", dataset, "test", batch_size=4)
    (root / f"rank{rank}.json").write_text(json.dumps(report))


def _spawn(root, dataset, runs, evaluate_alone=False) -> list[dict]:
    mp.spawn(_all_runs, args=(2, root / "init", dataset.path, root, runs, evaluate_alone), nprocs=2)
    return [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    world = make_world(SyntheticWorldConfig.tiny(seed=7))
    prep = PrepareConfig(user_k=3, item_k=3, image_size=32, image_format="raw", hash_vocab_size=200)
    return prepare(world.source, prep, tmp_path_factory.mktemp("fsdp_data") / "data", progress=False)


# One epoch (3 steps per process) of FSDP and of DDP on an ID model, with every step clipped (the global
# norm is summed over shards) and without clipping: a clipped gradient has a fixed norm, and AdamW's update
# m/sqrt(v) hardly depends on the gradient's scale, so only unclipped moments show a gradient of the
# wrong scale. The slow runs below train the mom encoder (its processes may leave a backbone unused).
EPOCH_RUNS = [
    (f"{parallel}{clip}", f"{parallel}{clip}", 1, {"parallel": parallel, "grad_clip": clip, "items": "id"})
    for clip in (0.05, 0.0)
    for parallel in ("fsdp", "ddp")
]


@pytest.fixture(scope="module")
def epoch_runs(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("fsdp_epoch")
    return root, _spawn(root, dataset, EPOCH_RUNS)


@pytest.mark.parametrize("clip", [0.05, 0.0])
def test_one_fsdp_epoch_equals_one_ddp_epoch(epoch_runs, clip):
    root, (zero, one) = epoch_runs
    fsdp, ddp = zero[f"fsdp{clip}"], zero[f"ddp{clip}"]
    assert len(fsdp["losses"]) == len(ddp["losses"]) == 3 and fsdp["sums"] == one[f"fsdp{clip}"]["sums"]
    # last/ as rank 0 wrote it, whole tensors in both runs: AdamW's step counts and moments (exp_avg sums
    # (1 - beta1) x the averaged gradients) under every parameter name, and the weights.
    last = {p: root / f"{p}{clip}" / "last" for p in ("fsdp", "ddp")}
    moments, expected = (load_file(str(last[p] / OPTIMIZER_FILE)) for p in ("fsdp", "ddp"))
    assert moments.keys() == expected.keys() and moments
    for key, tensor in expected.items():
        torch.testing.assert_close(moments[key], tensor, rtol=1e-5, atol=1e-8, msg=key)
    weights, expected = (load_file(str(last[p] / "model" / WEIGHTS_FILE)) for p in ("fsdp", "ddp"))
    assert weights.keys() == expected.keys()
    for key, tensor in expected.items():
        # Where the gradient is zero in exact arithmetic (the key part of an attention's qkv bias), its
        # rounding noise (~1e-10, of either sign) becomes +-lr in AdamW's normalised update; those
        # entries are left out (their moments agree above).
        moved = moments.get(f"{key}.exp_avg")
        stepped = torch.ones_like(tensor, dtype=torch.bool) if moved is None else moved.abs() >= 1e-7
        torch.testing.assert_close(weights[key][stepped], tensor[stepped], rtol=0, atol=1e-6, msg=key)
    torch.testing.assert_close(torch.tensor(fsdp["losses"]), torch.tensor(ddp["losses"]), rtol=1e-5, atol=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("fsdp")
    return root, _spawn(root, dataset, RUNS, evaluate_alone=True)


@pytest.mark.slow
def test_fsdp_run_writes_whole_checkpoints_that_evaluate_alike_in_one_process(runs):
    root, (zero, one) = runs
    out = root / "fsdp"
    assert zero["fsdp"]["test"] == one["fsdp"]["test"]
    assert zero["fsdp"]["sums"] == one["fsdp"]["sums"] and len(zero["fsdp"]["sums"]) == 2
    assert json.loads((out / "result.json").read_text())["status"] == "finished"
    assert zero["alone"] == one["alone"] == zero["fsdp"]["test"]  # best/ alone: the reported metrics
    # last/ holds whole tensors in the usual format: every AdamW moment, keyed by its parameter's name,
    # has that parameter's whole shape.
    model = SequentialRecommender.from_pretrained(out / "last" / "model")
    trained = {id(p) for group in build_optimizer(model, OptimConfig()).param_groups for p in group["params"]}
    params = {name: p for name, p in model.named_parameters() if id(p) in trained}
    moments = load_file(str(out / "last" / OPTIMIZER_FILE))
    assert len(moments) == 3 * len(params)  # step, exp_avg, exp_avg_sq
    for name, param in params.items():
        assert moments[f"{name}.exp_avg"].shape == param.shape
        assert moments[f"{name}.exp_avg_sq"].shape == param.shape


@pytest.mark.slow
def test_resumed_fsdp_run_ends_as_the_uninterrupted_one(runs):
    root, (zero, one) = runs
    assert len(zero["resumed"]["losses"]) == len(zero["interrupted"]["losses"])  # one epoch each
    assert zero["interrupted"]["losses"] + zero["resumed"]["losses"] == zero["fsdp"]["losses"]
    assert zero["resumed"]["test"] == zero["fsdp"]["test"] == one["resumed"]["test"]
    assert zero["again"]["losses"] == [] and zero["again"]["test"] == zero["fsdp"]["test"]
    lines = [(root / d / "metrics.jsonl").read_text().splitlines() for d in ("fsdp", "resumed")]
    assert lines[0] == lines[1] and len(lines[0]) == 2


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "rtol"), [("", 1e-5), ("_bf16", 1e-3)])
def test_fsdp_losses_follow_ddp_on_the_same_seed(runs, precision, rtol):
    _, (zero, _) = runs
    fsdp, ddp = zero["fsdp" + precision], zero["ddp" + precision]
    assert len(fsdp["losses"]) == len(ddp["losses"]) > 2
    # The same arithmetic up to the order of the gradient reductions and of the sharded clipping norm's
    # sum (equal here, with 2 processes; not guaranteed with more, nor by NCCL).
    assert torch.allclose(torch.tensor(fsdp["losses"]), torch.tensor(ddp["losses"]), rtol=rtol, atol=0)
    assert torch.allclose(torch.tensor(fsdp["sums"]), torch.tensor(ddp["sums"]), rtol=rtol, atol=0)
