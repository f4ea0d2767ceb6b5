"""MoRec's ID + modality combinations (ADD, CON)."""

import pytest
import torch

from transrec.models.item_encoders import build_item_encoder

from .builders import D, items, text_config


def test_add_is_the_sum_of_the_id_and_the_text_vectors():
    encoder = build_item_encoder(
        "id_modality", D, 10, {"modality": "text", "modality_config": text_config()}
    ).eval()
    batch = items([3, 2, 4])
    torch.testing.assert_close(encoder(batch), encoder.ids(batch) + encoder.content(batch))
    assert encoder.needs_text and not encoder.needs_image and not encoder.transferable
    assert encoder.modality_parameters() == encoder.content.modality_parameters()


def test_concat_merges_both_vectors_through_a_dense_layer():
    config = {"modality": "text", "modality_config": text_config(), "combine": "concat"}
    encoder = build_item_encoder("id_modality", D, 10, config).eval()
    batch = items([3, 2])
    expected = encoder.merge(torch.cat([encoder.ids(batch), encoder.content(batch)], dim=-1))
    torch.testing.assert_close(encoder(batch), expected)
    encoder(batch).sum().backward()
    assert encoder.ids.embedding.weight.grad is not None and encoder.merge.weight.grad is not None


def test_bad_combinations_are_refused():
    with pytest.raises(ValueError, match="combine"):
        build_item_encoder("id_modality", D, 10, {"modality_config": text_config(), "combine": "mul"})
    with pytest.raises(ValueError, match="must be a content encoder"):
        build_item_encoder("id_modality", D, 10, {"modality": "id"})
