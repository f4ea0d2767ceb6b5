"""The mm encoder (PMMRec eq. 3 merge attention, sum and concat fusions)."""

import pytest
import torch

from transrec.models.item_encoders import ITEM_ENCODERS, build_item_encoder
from transrec.models.item_encoders.multimodal import pmmrec_tiny

from .builders import VOCAB, D, items


@pytest.mark.parametrize("fusion", ["merge_attention", "sum", "concat"])
def test_every_fusion_gives_an_item_vector_and_both_modality_vectors(fusion):
    encoder = build_item_encoder("mm", D, 10, pmmrec_tiny(vocab_size=VOCAB, fusion=fusion))
    out = encoder.encode(items([3, 5, 2], n_images=3))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "item": (3, D),
        "text_cls": (3, D),
        "image_cls": (3, D),
    }
    assert torch.isfinite(out["item"]).all() and "mm" in ITEM_ENCODERS.names()
    if fusion == "sum":
        torch.testing.assert_close(out["item"], out["text_cls"] + out["image_cls"])


def test_merge_attention_ignores_text_padding_and_uses_the_image():
    torch.manual_seed(0)
    encoder = build_item_encoder("mm", D, 10, pmmrec_tiny(vocab_size=VOCAB)).eval()
    batch = items([2, 4], n_images=2)
    scrambled = items([2, 4], n_images=2)
    scrambled.input_ids = torch.where(
        batch.attention_mask.bool(), batch.input_ids, torch.randint(1, VOCAB, (2, 4))
    )
    torch.testing.assert_close(encoder(scrambled), encoder(batch))
    other_images = items([2, 4], n_images=2, seed=1)
    other_images.input_ids, other_images.attention_mask = batch.input_ids, batch.attention_mask
    assert not torch.allclose(encoder(other_images), encoder(batch))


def test_gradients_reach_both_backbones_and_the_fusion_layer():
    encoder = build_item_encoder("mm", D, 10, pmmrec_tiny(vocab_size=VOCAB))
    encoder(items([3, 1], n_images=2)).sum().backward()
    for name in ("text.backbone", "image.backbone", "fuse", "text_proj", "image_proj", "mm_cls"):
        grads = [p.grad for n, p in encoder.named_parameters() if n.startswith(name) and p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_items_without_both_modalities_and_pooler_images_are_refused():
    encoder = build_item_encoder("mm", D, 10, pmmrec_tiny(vocab_size=VOCAB))
    with pytest.raises(ValueError, match="1 of 2 items lack text or an image"):
        encoder(items([3, 2], image_flags=[True, False]))
    config = pmmrec_tiny(vocab_size=VOCAB)
    config["image"]["pooling"] = "pooler"
    with pytest.raises(ValueError, match="use image pooling cls or mean"):
        build_item_encoder("mm", D, 10, config)


def test_a_pmmrec_backbone_trains_end_to_end(tmp_path):
    from safetensors.torch import load_file

    from transrec.data.prepare import PrepareConfig, prepare
    from transrec.data.synthetic import SyntheticWorldConfig, make_world
    from transrec.models.recommender import ModelConfig, SequentialRecommender, read_model_config
    from transrec.training.config import TrainConfig
    from transrec.training.trainer import seed_everything, train

    world = make_world(SyntheticWorldConfig.tiny(seed=3, text_only_fraction=0.0, image_only_fraction=0.0))
    prep = PrepareConfig(user_k=3, item_k=3, image_size=32, image_format="raw", hash_vocab_size=VOCAB)
    data = prepare(world.source, prep, tmp_path / "data", progress=False)
    fused = pmmrec_tiny(vocab_size=VOCAB)
    model = ModelConfig(d_model=D, max_len=8, item_encoder="mm", item_encoder_config=fused,
                        user_encoder_config={"n_layers": 1, "n_heads": 2})  # fmt: skip
    config = TrainConfig(dataset=str(data.path), output_dir=str(tmp_path / "run"), model=model, epochs=2,
                         batch_size=8, device="cpu", collapse_factor=0.0, objective="inbatch")  # fmt: skip
    result = train(config, progress=False)
    # End to end: both backbones moved from the weights the run started from (the trainer seeds, then
    # builds the model whose config it saved).
    seed_everything(config.seed)
    before = SequentialRecommender(read_model_config(result.output_dir / "best")).state_dict()
    after = load_file(str(result.output_dir / "best" / "model.safetensors"))
    changed = {".".join(key.split(".")[:3]) for key in after if not torch.equal(after[key], before[key])}
    assert {"item_encoder.text.backbone", "item_encoder.image.backbone"} <= changed
