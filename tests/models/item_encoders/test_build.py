import pytest
import torch

from transrec.config import ConfigError, from_dict
from transrec.data.item_content import ItemBatch
from transrec.models.item_encoders import (
    ITEM_ENCODERS,
    ItemEncoder,
    build_item_encoder,
    efficientnet_lite0_top_blocks,
    efficientnet_lite0_two_stage,
    encode_sequences,
    minilm_top_blocks,
    minilm_two_stage,
    mom_minilm_efficientnet,
)
from transrec.models.item_encoders.image import ImageEncoderConfig
from transrec.models.item_encoders.mom import MoMEncoderConfig
from transrec.models.item_encoders.text import TextEncoderConfig

from .builders import D, text_config


def test_registry_holds_the_four_encoders():
    assert {"id", "text", "image", "mom"} <= set(ITEM_ENCODERS.names())
    assert ITEM_ENCODERS.get("id").transferable is False
    assert ITEM_ENCODERS.get("text").needs_text and ITEM_ENCODERS.get("image").needs_image


def test_unknown_and_mistyped_config_keys_are_refused():
    with pytest.raises(ConfigError, match=r"text\.poolng"):
        build_item_encoder("text", D, 10, {**text_config(), "poolng": "mean"})
    with pytest.raises(ConfigError, match=r"mom\.image\.backbon"):
        build_item_encoder("mom", D, 10, {"text": text_config(), "image": {"backbon": "x"}})
    with pytest.raises(ConfigError, match=r"text\.pooling"):
        build_item_encoder("text", D, 10, text_config(pooling="max"))
    with pytest.raises(ConfigError, match="init_std"):
        build_item_encoder("id", D, 10, {"init_std": "big"})
    with pytest.raises(KeyError, match="unknown item encoder"):
        build_item_encoder("clip", D, 10, {})


def test_presets_are_valid_configs():
    # Parsed only (no weights loaded): a preset that drifts from its config class fails here.
    for preset in (minilm_top_blocks(2), minilm_two_stage(6)):
        from_dict(TextEncoderConfig, preset)
    for preset in (efficientnet_lite0_top_blocks(2), efficientnet_lite0_two_stage(6)):
        from_dict(ImageEncoderConfig, preset)
    config = from_dict(MoMEncoderConfig, mom_minilm_efficientnet(2))
    assert config.text.trainable_blocks == config.image.trainable_blocks == 2


def test_id_encoder_looks_up_its_table_and_refuses_padding():
    encoder = build_item_encoder("id", D, 5, {})
    assert torch.equal(encoder.embedding.weight[0], torch.zeros(D))
    ids = torch.tensor([5, 1, 3])
    out = encoder(ItemBatch(item_ids=ids, modality=torch.zeros(3, dtype=torch.uint8)))
    torch.testing.assert_close(out, encoder.embedding.weight[ids])
    for bad in (0, 6):
        with pytest.raises(ValueError, match=r"must be in 1\.\.5"):
            encoder(ItemBatch(item_ids=torch.tensor([1, bad]), modality=torch.zeros(2, dtype=torch.uint8)))


class CountingEncoder(ItemEncoder):
    """Wraps an encoder and records every item id it is asked to encode."""

    def __init__(self, inner: ItemEncoder) -> None:
        super().__init__(inner.d_model)
        self.inner = inner
        self.seen: list[int] = []

    def forward(self, items: ItemBatch) -> torch.Tensor:
        self.seen += items.item_ids.tolist()
        return self.inner(items)


def test_encode_sequences_encodes_each_distinct_item_once_and_zeroes_padding():
    sequences = torch.tensor([[0, 0, 3, 1, 3], [0, 2, 2, 5, 1], [4, 1, 3, 2, 5]])
    unique, inverse = torch.unique(sequences[sequences > 0], return_inverse=True)
    slots = torch.full_like(sequences, -1)
    slots[sequences > 0] = inverse
    counting = CountingEncoder(build_item_encoder("id", D, 5, {}))

    out = encode_sequences(
        counting, ItemBatch(item_ids=unique, modality=torch.zeros(5, dtype=torch.uint8)), slots
    )
    assert sorted(counting.seen) == [1, 2, 3, 4, 5]  # each once; the padding index 0 never arrives
    assert out.shape == (3, 5, D)
    assert torch.equal(out[sequences == 0], torch.zeros(3, D))
    torch.testing.assert_close(out[sequences > 0], counting.inner.embedding.weight[sequences[sequences > 0]])
