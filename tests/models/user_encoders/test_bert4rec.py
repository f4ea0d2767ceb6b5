import torch

from transrec.models.user_encoders import build_user_encoder

from . import left_padded


def make_encoder():
    torch.manual_seed(0)
    return build_user_encoder("bert4rec", 16, 12, None, {}).eval()


def test_masked_items_do_not_influence_the_output():
    encoder = make_encoder()
    vectors, valid = left_padded([7, 4], 8)
    masked = torch.zeros_like(valid)
    masked[0, 3], masked[1, 7] = True, True
    other = vectors.clone()
    other[masked] = torch.randn(2, 16) * 10
    other.requires_grad_(True)
    out = encoder(other, valid, masked=masked)
    torch.testing.assert_close(out, encoder(vectors, valid, masked=masked), atol=1e-6, rtol=0)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.all(other.grad[masked] == 0) and torch.all(other.grad[valid & ~masked] != 0)
    # ... while the mask vector does: the output differs from the unmasked sequence.
    assert not torch.allclose(out, encoder(vectors, valid), atol=1e-4)


def test_every_position_sees_later_items():
    encoder = make_encoder()
    vectors, valid = left_padded([6], 6)
    changed = vectors.clone()
    changed[0, -1] = torch.randn(16)
    assert not torch.allclose(encoder(changed, valid)[0, 0], encoder(vectors, valid)[0, 0], atol=1e-4)


def test_mask_flags_on_padding_are_ignored():
    encoder = make_encoder()
    vectors, valid = left_padded([3], 6)
    torch.testing.assert_close(encoder(vectors, valid, masked=~valid), encoder(vectors, valid))
