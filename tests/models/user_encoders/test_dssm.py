import pytest
import torch

from transrec.models.user_encoders import build_user_encoder

from . import left_padded


def test_same_user_same_output_whatever_the_sequence():
    torch.manual_seed(0)
    encoder = build_user_encoder("dssm", 16, 12, 4, {"n_layers": 1}).eval()
    a, a_valid = left_padded([5, 5], 8, seed=0)
    b, b_valid = left_padded([2, 7], 8, seed=1)
    users = torch.tensor([3, 1])
    out_a, out_b = encoder(a, a_valid, user_ids=users), encoder(b, b_valid, user_ids=users)
    assert torch.equal(out_a[:, -1], out_b[:, -1])
    assert torch.equal(out_b[1, 1:], out_b[1, -1].expand(7, 16))  # broadcast to every valid position
    assert torch.all(out_b[1, 0] == 0)  # ... and zero at padding
    assert not torch.allclose(out_a[0, -1], out_a[1, -1])  # different users differ


def test_user_ids_are_required():
    with pytest.raises(ValueError, match="needs n_users"):
        build_user_encoder("dssm", 16, 12, None, {})
    encoder = build_user_encoder("dssm", 16, 12, 4, {})
    with pytest.raises(ValueError, match="user_ids"):
        encoder(*left_padded([3], 4))
