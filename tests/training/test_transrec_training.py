"""TransRec's two stages through the trainer (section 3.3): stage 1 (UEP) trains the user encoder, the DT
layers and the UEP head over frozen modality encoders; stage 2 (CPC) starts from it and trains them all."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transrec.config import load_config
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.recommender import SequentialRecommender, read_model_config
from transrec.training.checkpoint import TransferError, evaluate_checkpoint
from transrec.training.config import TrainConfig
from transrec.training.trainer import build_optimizer, seed_everything, train

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("transrec")
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    config = PrepareConfig(user_k=3, item_k=3, image_size=world.config.image_size, image_format="raw")
    return (prepare(world.source, config, root / "source", progress=False),
            prepare(world.target, config, root / "target", progress=False))  # fmt: skip


def stage(name: str, dataset, out: Path, *overrides: str) -> TrainConfig:
    """The synthetic config of a stage, on the tiny world, for a few epochs on the CPU."""
    common = [f"dataset={dataset.path}", f"output_dir={out}", "epochs=3", "device=cpu", "collapse_factor=0"]
    return load_config(TrainConfig, CONFIGS / f"transrec_synthetic_{name}.yaml", [*common, *overrides])


def modality_keys(model: SequentialRecommender) -> set[str]:
    """State-dict names of the modality encoders' parameters (the pretrained backbones)."""
    ids = {id(p) for p in model.item_encoder.modality_parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


@pytest.fixture(scope="module")
def stage1(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    return train(stage("stage1_uep", world[0], out), progress=False)


def test_stage1_trains_only_above_frozen_modality_encoders_and_stage2_trains_them(world, stage1, tmp_path):
    checkpoint = stage1.output_dir / "best"
    after1 = load_file(str(checkpoint / "model.safetensors"))
    # The weights stage 1 started from: the trainer seeds, then builds the model it saved the config of.
    seed_everything(0)
    model = SequentialRecommender(read_model_config(checkpoint))
    before = model.state_dict()
    frozen = modality_keys(model)
    assert any(k.startswith("item_encoder.text.backbone") for k in frozen)
    assert any(k.startswith("item_encoder.image.backbone") for k in frozen)
    assert [k for k in frozen if not torch.equal(after1[k], before[k])] == []

    moved = {k.split(".")[0] for k in after1 if k not in frozen and not torch.equal(after1[k], before[k])}
    assert moved == {"user_encoder", "uep_head", "item_encoder"}  # item_encoder: its DT layers

    config = stage("stage2_cpc", world[0], tmp_path / "s2", f"init_checkpoint={checkpoint}")
    stage2 = train(config, progress=False)
    after2 = load_file(str(stage2.output_dir / "best" / "model.safetensors"))
    assert not any(k.startswith("uep_head") for k in after2)  # the stage-2 model does without the head
    assert [k for k in frozen if not torch.equal(after2[k], after1[k])]  # end to end: the backbones move


def test_stage2_starts_from_the_stage1_encoders_without_its_head(world, stage1, tmp_path):
    checkpoint = stage1.output_dir / "best"
    still = ["optim.lr=0", "optim.encoder_lr=0", "epochs=1"]
    result = train(stage("stage2_cpc", world[0], tmp_path, f"init_checkpoint={checkpoint}", *still),
                   progress=False)  # fmt: skip
    loaded = load_file(str(result.output_dir / "best" / "model.safetensors"))
    source = load_file(str(checkpoint / "model.safetensors"))
    assert set(loaded) == {k for k in source if not k.startswith("uep_head")}
    assert all(torch.equal(loaded[k], source[k]) for k in loaded)


def test_a_stage1_model_is_evaluated_through_its_head(stage1):
    model = SequentialRecommender.from_pretrained(stage1.output_dir / "best")
    states = torch.randn(3, model.config.d_model)
    table = torch.randn(model.config.n_items + 1, model.config.d_model)
    scores = model.ranking_users(states) @ model.ranking_items(table).T
    head = model.uep_head
    logits = states @ head.weight.detach().T + head.bias.detach()  # eq. 8 before the ReLU
    torch.testing.assert_close(scores, logits)


def test_stage1_checkpoints_do_not_apply_to_another_catalogue(world, stage1):
    with pytest.raises(TransferError, match="UEP head over another catalogue"):
        evaluate_checkpoint(stage1.output_dir / "best", world[1])


def test_freezing_keeps_parts_out_of_the_optimizer_and_in_eval_mode(world):
    config = stage("stage1_uep", world[0], Path("unused"))
    model = SequentialRecommender(replace(config.model, n_items=world[0].n_items, n_users=world[0].n_users))
    frozen = model.item_encoder.modality_parameters()
    model.freeze(["modality_encoders"])
    model.train()
    assert not model.item_encoder.text.backbone.training and not model.item_encoder.image.backbone.training
    assert model.user_encoder.training and model.item_encoder.text.head.training
    groups = build_optimizer(model, config.optim).param_groups
    optimized = {id(p) for group in groups for p in group["params"]}
    assert frozen and not optimized & {id(p) for p in frozen}
    assert {id(p) for p in model.user_encoder.parameters()} <= optimized
    with pytest.raises(ValueError, match="cannot freeze"):
        model.freeze(["backbones"])


def test_the_objectives_name_what_they_need(world, tmp_path):
    with pytest.raises(ValueError, match=r"needs model\.uep_head"):
        train(stage("stage1_uep", world[0], tmp_path / "a", "model.uep_head=false"), progress=False)
    with pytest.raises(ValueError, match="use mode s2o"):
        train(stage("stage2_cpc", world[0], tmp_path / "b", "mode=s2s"), progress=False)
    with pytest.raises(ValueError, match="frozen: unknown part"):
        stage("stage1_uep", world[0], tmp_path / "c", "frozen=[backbones]")
