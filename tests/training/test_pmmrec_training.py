"""PMMRec pre-training (DAP + NICL + NID + RCL) then DAP-only fine-tuning through the trainer."""

import json

import pytest

from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.item_encoders.multimodal import pmmrec_tiny
from transrec.models.recommender import ModelConfig
from transrec.training.config import OptimConfig, PMMRecLossConfig, TrainConfig
from transrec.training.trainer import train

VOCAB = 200


@pytest.fixture(scope="module")
def platforms(tmp_path_factory):
    root = tmp_path_factory.mktemp("pmmrec")
    world = make_world(SyntheticWorldConfig.tiny(seed=4, text_only_fraction=0.0, image_only_fraction=0.0))
    prep = PrepareConfig(user_k=3, item_k=3, image_size=32, image_format="raw", hash_vocab_size=VOCAB)
    return (prepare(world.source, prep, root / "source", progress=False),
            prepare(world.target, prep, root / "target", progress=False))  # fmt: skip


def run(dataset, out, nid_head=True, **overrides):
    items = pmmrec_tiny(vocab_size=VOCAB)
    model = ModelConfig(d_model=16, max_len=8, item_encoder="mm", item_encoder_config=items,
                        user_encoder_config={"n_layers": 1, "n_heads": 2}, nid_head=nid_head)  # fmt: skip
    options = {"dataset": str(dataset.path), "output_dir": str(out), "model": model, "objective": "pmmrec",
               "epochs": 3, "batch_size": 8, "device": "cpu", "collapse_factor": 0.0, "seed": 0,
               "optim": OptimConfig(lr=3e-3, encoder_lr=1e-3)}  # fmt: skip
    options.update(overrides)
    return TrainConfig(**options)


def test_pretraining_with_all_four_terms_then_dap_only_fine_tuning(platforms, tmp_path):
    source, target = platforms
    pretrained = train(run(source, tmp_path / "pt"), progress=False)
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "pt" / "metrics.jsonl").read_text().splitlines()
    ]
    assert losses[-1] < losses[0] and pretrained.test["NDCG@10"] > 0
    dap_only = PMMRecLossConfig(contrastive=0.0, nid=0.0, rcl=0.0)
    tuned = train(run(target, tmp_path / "ft", nid_head=False, pmmrec=dap_only,
                      init_checkpoint=str(tmp_path / "pt" / "best")), progress=False)  # fmt: skip
    assert tuned.status == "finished"


@pytest.mark.parametrize("variant", ["vcl", "icl"])
def test_the_ablation_variants_train(platforms, tmp_path, variant):
    source, _ = platforms
    config = run(source, tmp_path, epochs=1, pmmrec=PMMRecLossConfig(variant=variant, nid=0.0))
    assert train(config, progress=False).status == "finished"


def test_missing_pieces_are_named(platforms, tmp_path):
    source, _ = platforms
    with pytest.raises(ValueError, match=r"needs model\.nid_head"):
        train(run(source, tmp_path / "a", nid_head=False), progress=False)
    text = ModelConfig(
        d_model=16, max_len=8, item_encoder="text", item_encoder_config=pmmrec_tiny(VOCAB)["text"]
    )
    with pytest.raises(ValueError, match="needs the mm item encoder"):
        train(run(source, tmp_path / "b", model=text), progress=False)
    with pytest.raises(ValueError, match="use mode s2s"):
        run(source, tmp_path / "c", mode="s2o")
