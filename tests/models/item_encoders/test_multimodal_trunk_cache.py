"""The mm encoder's frozen-trunk cache: the outputs and gradients of ``encode`` are those of the uncached
encoder for every fusion and every freezing of either side, and the frozen parts no longer run."""

import pytest
import torch

from tests.frozen_blocks import FrozenBlockCounter
from tests.models.item_encoders.builders import D, text_config, tiny_source, vit_config
from transrec.data.item_content import ItemContent
from transrec.models.item_encoders import build_item_encoder
from transrec.models.item_encoders.freezing import find_blocks

TOP_1 = {"freeze": "top_k", "trainable_blocks": 1}
ALL = {"freeze": "all"}
BOTH = 3  # the modality bits of an item with text and an image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # The default tiny world has text-only and image-only items too: the cache must leave them out.
    return tiny_source(tmp_path_factory.mktemp("mm_trunk") / "ds")


def mm_config(text: dict, image: dict, fusion: str, efficientnet: bool = False) -> dict:
    image_side = (
        {"random_init": True, "image_size": 32, "pooling": "mean", **image}
        if efficientnet
        else vit_config(pooling="cls", **image)
    )
    return {"text": text_config(pooling="cls", **text), "image": image_side, "fusion": fusion}


SIDES = {
    "text-top1": (TOP_1, {}),
    "text-all": (ALL, {}),
    "image-top1": ({}, TOP_1),
    "image-all": ({}, ALL),
    "both-top1": (TOP_1, TOP_1),
    "both-all": (ALL, ALL),
}
CASES = {
    f"{side}-{fusion}": mm_config(*SIDES[side], fusion)
    for fusion in ("merge_attention", "sum", "concat")
    for side in SIDES
}
# EfficientNet's tokens are the cells of its final feature map (its all-frozen cache stores that map).
CASES["efficientnet-top1-merge_attention"] = mm_config(TOP_1, TOP_1, "merge_attention", efficientnet=True)
CASES["efficientnet-all-merge_attention"] = mm_config(TOP_1, ALL, "merge_attention", efficientnet=True)


def both_modalities(content: ItemContent, count: int) -> torch.Tensor:
    return (torch.nonzero((content.modality[1:] & BOTH) == BOTH).squeeze(1) + 1)[:count]


def encode_and_grads(encoder, batch, seed=0):
    torch.manual_seed(seed)  # the same dropout draws in the trainable parts with and without the cache
    encoder.zero_grad(set_to_none=True)
    out = encoder.encode(batch)
    sum(v.square().sum() + v.sum() for v in out.values()).backward()
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads


@pytest.mark.parametrize("case", CASES)
def test_cached_encode_and_gradients_equal_the_uncached_ones(dataset, case):
    torch.manual_seed(0)
    encoder = build_item_encoder("mm", D, dataset.n_items, CASES[case]).train()
    content = ItemContent(dataset)
    ids = both_modalities(content, 9)
    counter = FrozenBlockCounter().watch(encoder)
    expected, expected_grads = encode_and_grads(encoder, content.batch(ids))
    assert len(counter.backbones) == encoder.text.has_frozen_trunk + encoder.image.has_frozen_trunk
    assert counter.backbone_rows() == dict.fromkeys(counter.backbones, len(ids))

    assert encoder.has_frozen_trunk and encoder.reads_pixels
    counter.reset()
    cached = encoder.build_trunk_cache(content, batch_size=4)
    assert cached == int(((content.modality[1:] & BOTH) == BOTH).sum()) < dataset.n_items
    # Each side's frozen blocks saw every cached item exactly once.
    assert counter.backbone_rows() == dict.fromkeys(counter.backbones, cached)
    image_cached = encoder.image.has_frozen_trunk
    assert encoder.reads_pixels == (not image_cached)
    lean = ItemContent(dataset, pixels=encoder.reads_pixels)
    counter.reset()
    got, grads = encode_and_grads(encoder, lean.batch(ids))
    assert set(counter.calls.values()) == {0}  # read from the caches: no frozen block ran
    assert got.keys() == expected.keys() == {"item", "text_cls", "image_cls"}
    for key, value in got.items():
        torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5, msg=key)
    assert grads.keys() == expected_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)

    encoder.drop_trunk_cache()
    assert encoder.text.trunk_store is None and encoder.image.trunk_store is None and encoder.reads_pixels
    again, _ = encode_and_grads(encoder, content.batch(ids))
    torch.testing.assert_close(again["item"], expected["item"], rtol=0, atol=0)
    assert counter.backbone_rows() == dict.fromkeys(counter.backbones, len(ids))  # whole backbones again


def test_an_all_frozen_image_cache_holds_the_tokens_and_no_frozen_part_runs(dataset):
    encoder = build_item_encoder("mm", D, dataset.n_items, mm_config(TOP_1, ALL, "merge_attention")).eval()
    content = ItemContent(dataset)
    ids = both_modalities(content, 3)
    with torch.no_grad():
        tokens = encoder.image.tokens(content.batch(ids))
    text_model, image_model = encoder.text.backbone.model, encoder.image.backbone.model
    calls = {"text_bottom": 0, "text_top": 0, "image": 0}

    def count(key):
        return lambda *args: calls.__setitem__(key, calls[key] + 1)

    text_bottom, text_top = (text_model.get_submodule(b) for b in find_blocks(text_model))
    text_bottom.register_forward_hook(count("text_bottom"))
    text_top.register_forward_hook(count("text_top"))
    image_model.net.register_forward_hook(count("image"))

    encoder.build_trunk_cache(content)
    # The patch tokens merge attention reads ([CLS; 16 patches] x width), not the pooled [width].
    assert encoder.image.trunk_store.shape == tuple(tokens.shape[1:]) and tokens.ndim == 3
    calls.update(text_bottom=0, text_top=0, image=0)
    encoder.encode(ItemContent(dataset, pixels=False).batch(ids))
    assert calls == {"text_bottom": 0, "text_top": 1, "image": 0}


def test_an_image_encoder_holding_a_token_cache_refuses_to_pool_it(dataset):
    encoder = build_item_encoder("image", D, dataset.n_items, vit_config(pooling="cls", **ALL))
    encoder.cache_tokens = True
    content = ItemContent(dataset, text=False)
    encoder.build_trunk_cache(content)
    batch = content.batch((torch.nonzero(content.modality[1:] & 2).squeeze(1) + 1)[:2])
    assert encoder.tokens(batch).ndim == 3
    with pytest.raises(ValueError, match="holds token states"):
        encoder(batch)


def test_memory_mapped_caches_of_the_two_sides_keep_apart(dataset, tmp_path):
    config = mm_config(TOP_1, ALL, "merge_attention")
    encoder = build_item_encoder("mm", D, dataset.n_items, config).eval()
    content = ItemContent(dataset)
    ids = both_modalities(content, 5)
    encoder.build_trunk_cache(content)
    in_memory = encoder(content.batch(ids))
    encoder.build_trunk_cache(content, max_memory_mb=0.001, directory=tmp_path)
    assert encoder.text.trunk_store.on_disk and encoder.image.trunk_store.on_disk
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.npy")} == {
        "text/trunk.npy",
        "image/trunk.npy",
    }
    torch.testing.assert_close(encoder(content.batch(ids)), in_memory, rtol=0, atol=0)
