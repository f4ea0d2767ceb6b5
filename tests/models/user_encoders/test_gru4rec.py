import torch

from transrec.models.user_encoders import build_user_encoder

from . import left_padded, repad

CONFIG = {"hidden_size": 24, "n_layers": 2, "input_layer": True}


def make_encoder():
    torch.manual_seed(0)
    return build_user_encoder("gru4rec", 16, 12, None, CONFIG).eval()


def test_matches_a_plain_gru_on_the_unpadded_sequence():
    encoder = make_encoder()
    vectors, valid = left_padded([5, 2], 8)
    out = encoder(vectors, valid)
    for row, n in enumerate([5, 2]):
        states, _ = encoder.gru(encoder.input_layer(vectors[row : row + 1, -n:]))
        torch.testing.assert_close(out[row, -n:], encoder.output(states)[0], atol=1e-6, rtol=0)


def test_padding_invariance_is_exact():
    encoder = make_encoder()
    vectors, valid = left_padded([8, 5, 1, 0], 8)
    longer, longer_valid = repad(vectors, valid, 12)
    assert torch.equal(encoder(longer, longer_valid)[:, 4:][valid], encoder(vectors, valid)[valid])


def test_holes_in_the_mask_are_skipped():
    # Not produced by left padding, but the packing handles any mask: a hole is simply not a step.
    encoder = make_encoder()
    vectors, valid = left_padded([6], 6)
    holed = valid.clone()
    holed[0, 2] = False
    out = encoder(vectors, holed)
    packed = encoder(vectors[:, [0, 1, 3, 4, 5]], valid[:, :5])
    torch.testing.assert_close(out[holed], packed[0], atol=1e-6, rtol=0)
    assert torch.all(out[0, 2] == 0)
