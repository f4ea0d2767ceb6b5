"""Evaluation under torch.distributed (gloo, 2 CPU processes) gives exactly the single-process metrics."""

import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from transrec.data.item_content import ItemContent
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import PreparedDataset
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.evaluation import model_eval
from transrec.models.item_encoders.image import tiny_vit
from transrec.models.item_encoders.text import tiny_text
from transrec.models.recommender import ModelConfig, SequentialRecommender, dataset_tokenizer
from transrec.training.checkpoint import evaluate_checkpoint


def _evaluate_in_group(rank, world_size, init_file, checkpoint, dataset, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    ranked = []  # the users this process ranks: a share, not all of them
    original = model_eval.ranks_from_embeddings
    model_eval.ranks_from_embeddings = lambda users, *a, **k: (
        ranked.append(len(users)) or original(users, *a, **k)
    )
    try:
        metrics = evaluate_checkpoint(checkpoint, dataset, "test", batch_size=4)
        model = SequentialRecommender.from_pretrained(checkpoint).eval()
        table = model_eval.item_table(model, ItemContent(PreparedDataset(dataset)), batch_size=4)
        save_file({"table": table}, str(out / f"table{rank}.safetensors"))
        (out / f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "ranked": sum(ranked)}))
    finally:
        model_eval.ranks_from_embeddings = original
        dist.destroy_process_group()


def test_metrics_of_a_checkpoint_are_identical_with_one_and_two_processes(tmp_path):
    world = make_world(SyntheticWorldConfig.tiny(seed=5))
    prep = PrepareConfig(user_k=3, item_k=3, image_size=32, image_format="raw", hash_vocab_size=200)
    data = prepare(world.source, prep, tmp_path / "data", progress=False)
    items = {"text": tiny_text(vocab_size=200), "image": tiny_vit(image_size=32)}
    torch.manual_seed(0)
    sizes = {"n_items": data.n_items, "n_users": data.n_users, "tokenizer": dataset_tokenizer(data.meta)}
    config = ModelConfig(d_model=16, max_len=8, item_encoder="mom", item_encoder_config=items, **sizes)
    model = SequentialRecommender(config)
    model.save_pretrained(tmp_path / "ckpt")
    single = evaluate_checkpoint(tmp_path / "ckpt", data, "test", batch_size=4)
    assert data.n_users > 8 and data.n_items > 8  # several chunks of 4 users and items per process

    mp.spawn(
        _evaluate_in_group, args=(2, tmp_path / "init", tmp_path / "ckpt", data.path, tmp_path), nprocs=2
    )
    model = SequentialRecommender.from_pretrained(tmp_path / "ckpt").eval()
    table = model_eval.item_table(model, ItemContent(data), batch_size=4)
    ranked = []
    for rank in (0, 1):
        saved = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert saved["metrics"] == single
        ranked.append(saved["ranked"])
        assert torch.equal(
            load_file(str(tmp_path / f"table{rank}.safetensors"))["table"], table
        )  # gathered, not summed twice
    assert sum(ranked) == data.n_users and min(ranked) > 0  # every user once, shared out
