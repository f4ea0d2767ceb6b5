"""DDP training with 2 CPU processes (gloo): it completes, keeps the replicas identical, writes from rank 0
only, and resumes."""

import json

import torch.distributed as dist
import torch.multiprocessing as mp

from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.item_encoders.image import tiny_vit
from transrec.models.item_encoders.text import tiny_text
from transrec.models.recommender import ModelConfig
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.trainer import train


def _config(dataset, out, epochs):
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
    }
    return TrainConfig(
        dataset=str(dataset), output_dir=str(out), model=model, optim=OptimConfig(lr=3e-3), **run
    )


def _train_in_group(rank, world_size, init_file, dataset, out, epochs, report):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    sums = []

    def record(event, info):
        if event == "epoch":  # a checksum of the replica after each epoch
            sums.append(float(sum(p.double().sum() for p in info["model"].parameters())))

    try:
        result = train(_config(dataset, out, epochs), progress=False, hook=record)
        report.joinpath(f"rank{rank}.json").write_text(json.dumps({"test": result.test, "sums": sums}))
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, dataset, out, epochs, tag):
    report = tmp_path / tag
    report.mkdir()
    mp.spawn(_train_in_group, args=(2, tmp_path / f"init-{tag}", dataset, out, epochs, report), nprocs=2)
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
