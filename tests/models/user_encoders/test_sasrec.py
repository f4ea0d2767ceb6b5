import pytest
import torch

from transrec.models.user_encoders import build_user_encoder
from transrec.models.user_encoders.transformer import attention_mask

from . import left_padded, repad


def test_attention_mask_is_causal_hides_padded_keys_and_lets_padding_see_itself():
    valid = torch.tensor([[False, True, True]])
    expected = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=torch.bool)
    assert torch.equal(attention_mask(valid, causal=True)[0, 0], expected)
    # Without causality the padded query also sees the valid keys; its output is zeroed anyway.
    bidirectional = torch.tensor([[1, 1, 1], [0, 1, 1], [0, 1, 1]], dtype=torch.bool)
    assert torch.equal(attention_mask(valid, causal=False)[0, 0], bidirectional)


def test_post_norm_variant_is_padding_invariant_too():
    torch.manual_seed(0)
    encoder = build_user_encoder("sasrec", 16, 12, None, {"norm_first": False, "n_layers": 1}).eval()
    vectors, valid = left_padded([8, 3], 8)
    longer, longer_valid = repad(vectors, valid, 12)
    out = encoder(vectors, valid)
    torch.testing.assert_close(encoder(longer, longer_valid)[:, 4:][valid], out[valid], atol=1e-5, rtol=0)
    assert torch.all(out[~valid] == 0)


def test_order_of_items_matters():
    # Position embeddings + causal attention: the same items in another order give another user state
    # (unlike the mean-pool encoder).
    torch.manual_seed(0)
    encoder = build_user_encoder("sasrec", 16, 12, None, {}).eval()
    vectors, valid = left_padded([6], 6)
    reversed_out = encoder(vectors.flip(1), valid)
    assert not torch.allclose(encoder(vectors, valid)[:, -1], reversed_out[:, -1], atol=1e-3)


def test_misconfigurations_fail_loudly():
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        build_user_encoder("sasrec", 16, 12, None, {"n_heads": 3})
    encoder = build_user_encoder("sasrec", 16, 4, None, {})
    with pytest.raises(ValueError, match="exceeds max_len=4"):
        encoder(*left_padded([2], 5))
