import pytest
import torch

from transrec.models.item_encoders import build_item_encoder

from .builders import D, items, text_config, vit_config


def mom(prefer: str = "text"):
    torch.manual_seed(0)
    return build_item_encoder(
        "mom", D, 10, {"text": text_config(), "image": vit_config(), "prefer": prefer}
    ).eval()


def record_calls(encoder) -> list[list[int]]:
    """Item ids of every batch ``encoder`` receives."""
    calls: list[list[int]] = []
    encoder.register_forward_pre_hook(lambda _, args: calls.append(args[0].item_ids.tolist()))
    return calls


# Items 1 and 3 have text only, 2 an image only, 4 both.
MIXED = dict(lengths=[3, 0, 5, 2], image_flags=[False, True, False, True])


def test_each_item_goes_through_the_encoder_of_its_modality_only():
    encoder = mom()
    batch = items(**MIXED)
    out = encoder(batch)
    assert out.shape == (4, D)
    torch.testing.assert_close(out[[0, 2, 3]], encoder.text(batch.select(torch.tensor([0, 2, 3]))))
    torch.testing.assert_close(out[[1]], encoder.image(batch.select(torch.tensor([1]))))

    # Text-only items do not depend on the image encoder, and vice versa.
    with torch.no_grad():
        for p in encoder.image.parameters():
            p.add_(torch.randn_like(p))
    changed = encoder(batch)
    torch.testing.assert_close(changed[[0, 2, 3]], out[[0, 2, 3]])
    assert not torch.allclose(changed[1], out[1])
    with torch.no_grad():
        for p in encoder.text.parameters():
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(encoder(batch)[1], changed[1])


def test_only_the_sub_batches_are_encoded():
    encoder = mom()
    text_calls, image_calls = record_calls(encoder.text), record_calls(encoder.image)
    encoder(items(**MIXED))
    assert text_calls == [[1, 3, 4]] and image_calls == [[2]]
    encoder(items([2, 3]))  # no image item: the image encoder does not run at all
    assert image_calls == [[2]]


@pytest.mark.parametrize("prefer", ["image", "sum"])
def test_items_with_both_modalities_follow_prefer(prefer):
    encoder = mom(prefer)
    batch = items(**MIXED)
    both = batch.select(torch.tensor([3]))
    expected = encoder.image(both) + (encoder.text(both) if prefer == "sum" else 0)
    torch.testing.assert_close(encoder(batch)[3:], expected)


def test_items_with_neither_modality_are_refused():
    with pytest.raises(ValueError, match="1 of 2 items have neither text nor an image"):
        mom()(items([3, 0], image_flags=[False, False]))


def test_backbone_parameters_of_both_encoders_get_the_encoder_learning_rate():
    encoder = mom()
    expected = {id(p) for p in [*encoder.text.backbone.parameters(), *encoder.image.backbone.parameters()]}
    assert {id(p) for p in encoder.modality_parameters()} == expected
