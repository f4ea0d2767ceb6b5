"""The frozen-trunk cache gives the outputs and gradients of the uncached encoder and skips the frozen
blocks, for every supported backbone."""

import pytest
import torch

from tests.frozen_blocks import FrozenBlockCounter
from tests.models.item_encoders.builders import HF_VISION, D, text_config, tiny_source, vit_config
from transrec.data.item_content import ItemContent
from transrec.models.item_encoders import build_item_encoder
from transrec.models.item_encoders.freezing import find_blocks


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_source(tmp_path_factory.mktemp("trunk") / "ds")


def items_with(content: ItemContent, bit: int, count: int) -> torch.Tensor:
    """The first ``count`` item indices whose modality has ``bit`` (1 text, 2 image, 3 either)."""
    return (torch.nonzero((content.modality[1:] & bit) > 0).squeeze(1) + 1)[:count]


def image_config(name: str, **freeze) -> dict:
    if name == "efficientnet":
        return {"random_init": True, "image_size": 32, **freeze}
    return {"backbone": None, "hf_config": HF_VISION[name], **freeze}


TOP_1 = {"freeze": "top_k", "trainable_blocks": 1}
CASES = {
    "text-top1": ("text", text_config(**TOP_1)),
    "text-top1-attention": ("text", text_config(pooling="attention", **TOP_1)),
    "text-frozen": ("text", text_config(freeze="all", dnn_layers=1)),
    **{f"{name}-top1": ("image", image_config(name, **TOP_1)) for name in [*HF_VISION, "efficientnet"]},
    "vit-frozen": ("image", vit_config(freeze="all")),
    "mom-top1": ("mom", {"text": text_config(**TOP_1), "image": vit_config(**TOP_1)}),
}


def output_and_grads(encoder, batch, seed=0):
    torch.manual_seed(seed)  # the same dropout draws in the trainable top with and without the cache
    encoder.zero_grad(set_to_none=True)
    out = encoder(batch)
    (out.square().sum() + out.sum()).backward()
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize("case", CASES)
def test_cached_outputs_and_gradients_equal_the_uncached_ones(dataset, case):
    kind, config = CASES[case]
    torch.manual_seed(0)
    encoder = build_item_encoder(kind, D, dataset.n_items, config).train()
    content = ItemContent(dataset, text=encoder.needs_text, image=encoder.needs_image)
    modality = content.modality[1:]
    wanted = {"text": 1, "image": 2, "mom": 3}[kind]
    ids = items_with(content, wanted, 9)
    batch = content.batch(ids)
    counter = FrozenBlockCounter().watch(encoder)
    expected, expected_grads = output_and_grads(encoder, batch)
    uncached_rows = counter.backbone_rows()
    assert counter.backbones and sum(uncached_rows.values()) == len(ids)

    assert encoder.has_frozen_trunk and encoder.reads_pixels == encoder.needs_image
    counter.reset()
    cached = encoder.build_trunk_cache(content, batch_size=4)
    assert cached == int(((modality & wanted) > 0).sum())
    # Building ran each item through the frozen blocks of the backbone it is routed to, exactly once.
    assert sum(counter.backbone_rows().values()) == cached
    assert not encoder.reads_pixels  # the image side no longer needs pixels
    lean = ItemContent(dataset, text=encoder.needs_text, image=encoder.needs_image, pixels=False)
    counter.reset()
    got, grads = output_and_grads(encoder, lean.batch(ids))
    assert set(counter.calls.values()) == {0}  # read from the cache: no frozen block ran
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert grads.keys() == expected_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)

    encoder.drop_trunk_cache()
    again, _ = output_and_grads(encoder, batch)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    assert counter.backbone_rows() == uncached_rows  # the whole backbone runs again


def test_frozen_blocks_do_not_run_once_cached(dataset):
    encoder = build_item_encoder("text", D, dataset.n_items, text_config(**TOP_1)).train()
    content = ItemContent(dataset, text=True, image=False)
    ids = items_with(content, 1, 3)
    model = encoder.backbone.model
    bottom, top = (model.get_submodule(b) for b in find_blocks(model))
    calls = {"bottom": 0, "top": 0}
    bottom.register_forward_hook(lambda *a: calls.__setitem__("bottom", calls["bottom"] + 1))
    top.register_forward_hook(lambda *a: calls.__setitem__("top", calls["top"] + 1))
    encoder(content.batch(ids))
    assert calls == {"bottom": 1, "top": 1}
    encoder.build_trunk_cache(content)
    calls.update(bottom=0, top=0)
    encoder(content.batch(ids))
    assert calls == {"bottom": 0, "top": 1}
    assert model.get_submodule(find_blocks(model)[0]) is bottom  # the swap is undone after the forward


def test_a_large_cache_goes_to_a_memory_mapped_file_and_gives_the_same_vectors(dataset, tmp_path):
    encoder = build_item_encoder("image", D, dataset.n_items, vit_config(**TOP_1)).eval()
    content = ItemContent(dataset, text=False, image=True)
    ids = items_with(content, 2, 5)
    encoder.build_trunk_cache(content)
    in_memory = encoder(content.batch(ids))
    assert not encoder.trunk_store.on_disk
    with pytest.raises(ValueError, match="give it a directory"):
        encoder.build_trunk_cache(content, max_memory_mb=0.001)
    encoder.build_trunk_cache(content, max_memory_mb=0.001, directory=tmp_path / "cache")
    assert encoder.trunk_store.on_disk and (tmp_path / "cache" / "trunk.npy").is_file()
    torch.testing.assert_close(encoder(content.batch(ids)), in_memory, rtol=0, atol=0)


def test_items_missing_from_the_cache_are_refused(dataset):
    encoder = build_item_encoder("text", D, dataset.n_items, text_config(**TOP_1))
    content = ItemContent(dataset, text=True, image=False)
    ids = items_with(content, 1, 3)
    encoder.build_trunk_cache(content, ids[:2])
    with pytest.raises(KeyError, match="not in the frozen-trunk cache"):
        encoder(content.batch(ids))


def test_encoders_without_a_frozen_trunk_cache_nothing(dataset):
    content = ItemContent(dataset, text=True, image=False)
    for kind, config in (("text", text_config()), ("id", {})):
        encoder = build_item_encoder(kind, D, dataset.n_items, config)
        assert not encoder.has_frozen_trunk
        assert encoder.build_trunk_cache(content) == 0
