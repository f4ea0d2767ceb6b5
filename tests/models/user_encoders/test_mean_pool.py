import torch

from transrec.models.user_encoders import build_user_encoder

from . import left_padded


def test_plain_running_mean_by_hand():
    encoder = build_user_encoder("mean_pool", 2, 4, None, {"n_layers": 0})
    vectors = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [3.0, 0.0], [2.0, 4.0]]])  # first slot is padding
    valid = torch.tensor([[False, True, True, True]])
    expected = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [2.0, 1.0], [2.0, 2.0]]])
    assert torch.equal(encoder(vectors, valid), expected)


def test_state_is_order_free_within_the_prefix():
    torch.manual_seed(0)
    encoder = build_user_encoder("mean_pool", 16, 12, None, {}).eval()
    vectors, valid = left_padded([6], 6)
    torch.testing.assert_close(encoder(vectors.flip(1), valid)[0, -1], encoder(vectors, valid)[0, -1])
