import pytest
import torch

from transrec.config import ConfigError
from transrec.models.item_encoders import build_item_encoder
from transrec.models.item_encoders.freezing import find_blocks

from .builders import HF_VISION, D, items, text_config


def trainable_names(encoder) -> set[str]:
    return {name for name, p in encoder.named_parameters() if p.requires_grad}


def test_top_1_of_a_two_layer_bert_trains_layer_1_and_above_only():
    encoder = build_item_encoder("text", D, 10, text_config(freeze="top_k", trainable_blocks=1))
    backbone = dict(encoder.backbone.model.named_parameters())
    assert {n for n, p in backbone.items() if p.requires_grad} == {
        n for n in backbone if n.startswith("encoder.layer.1.")
    }
    assert trainable_names(encoder) >= {"head.layers.0.weight", "head.layers.0.bias"}
    # The separate encoder learning rate applies to exactly the trainable backbone parameters.
    assert {id(p) for p in encoder.modality_parameters()} == {
        id(p) for n, p in backbone.items() if n.startswith("encoder.layer.1.")
    }

    encoder.train()
    encoder(items([3, 4])).sum().backward()
    for name, param in backbone.items():
        if name.startswith("encoder.layer.1."):
            assert param.grad is not None, name
        else:
            assert param.grad is None, name


def test_frozen_modules_stay_in_eval_mode_after_train():
    encoder = build_item_encoder("text", D, 10, text_config(freeze="top_k", trainable_blocks=1)).train()
    bert = encoder.backbone.model
    assert not bert.embeddings.training and not bert.encoder.layer[0].training
    assert bert.encoder.layer[1].training and encoder.head.training
    encoder.eval()
    encoder.train()
    assert not bert.embeddings.dropout.training and bert.encoder.layer[1].output.dropout.training


def test_two_stage_backbone_gets_no_grad_and_records_no_graph():
    encoder = build_item_encoder("text", D, 10, text_config(freeze="all", dnn_layers=2)).train()
    assert encoder.modality_parameters() == []
    assert trainable_names(encoder) == {f"head.layers.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}
    assert not any(m.training for m in encoder.backbone.model.modules())  # dropout off: a fixed extractor
    grad_enabled = []
    encoder.backbone.model.encoder.layer[0].register_forward_hook(
        lambda *_: grad_enabled.append(torch.is_grad_enabled())
    )
    states, _ = encoder.token_states(items([3, 2]))
    assert grad_enabled == [False] and states.grad_fn is None
    out = encoder(items([3, 2]))
    out.sum().backward()
    assert out.requires_grad
    assert all(p.grad is None for p in encoder.backbone.parameters())


BLOCKS = {
    "vit": ["layers.0", "layers.1"],
    "clip": ["encoder.layers.0", "encoder.layers.1"],
    "swin": ["encoder.layers.0.blocks.0", "encoder.layers.1.blocks.0", "encoder.layers.1.blocks.1"],
    "resnet": ["encoder.stages.0", "encoder.stages.1"],  # residual layers sit in an nn.Sequential
}


@pytest.mark.parametrize("backbone", sorted(BLOCKS))
def test_blocks_are_found_for_every_vision_backbone(backbone):
    encoder = build_item_encoder("image", D, 10, {"backbone": None, "hf_config": HF_VISION[backbone]})
    assert find_blocks(encoder.backbone.model.net) == BLOCKS[backbone]


def test_top_k_on_swin_trains_the_top_blocks_and_the_final_norm():
    encoder = build_item_encoder(
        "image",
        D,
        10,
        {"backbone": None, "hf_config": HF_VISION["swin"], "freeze": "top_k", "trainable_blocks": 2},
    )
    trainable = {n for n, p in encoder.backbone.model.net.named_parameters() if p.requires_grad}
    assert {n.split(".weight")[0].split(".bias")[0] for n in trainable if not n.startswith("encoder.")} == {
        "layernorm"
    }
    assert any(n.startswith("encoder.layers.1.blocks.0.") for n in trainable)
    # Stage 0 (its block and the downsample that runs after it) is below the top two blocks.
    assert not any(n.startswith(("encoder.layers.0.", "embeddings.")) for n in trainable)


def test_top_k_on_efficientnet_keeps_frozen_batchnorm_statistics():
    encoder = build_item_encoder(
        "image", D, 10, {"random_init": True, "image_size": 32, "freeze": "top_k", "trainable_blocks": 1}
    )
    net = encoder.backbone.model.net
    assert len(find_blocks(net)) == 16
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("_blocks") else "")
                 for n, p in net.named_parameters() if p.requires_grad}  # fmt: skip
    assert trainable == {"_blocks.15", "_conv_head", "_bn1"}
    frozen_bn, top_bn = net._blocks[14]._bn2, net._bn1
    before = frozen_bn.running_mean.clone(), top_bn.running_mean.clone()
    encoder.train()(items(n_images=2))
    assert torch.equal(frozen_bn.running_mean, before[0])
    assert not torch.equal(top_bn.running_mean, before[1])


def test_freeze_settings_are_checked():
    with pytest.raises(ConfigError, match="trainable_blocks"):
        build_item_encoder("text", D, 10, text_config(freeze="top_k"))
    with pytest.raises(ConfigError, match="only read with freeze=top_k"):
        build_item_encoder("text", D, 10, text_config(trainable_blocks=2))
    with pytest.raises(ValueError, match="has only 2 blocks"):
        build_item_encoder("text", D, 10, text_config(freeze="top_k", trainable_blocks=3))
