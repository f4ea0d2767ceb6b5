import torch

from transrec.models.user_encoders import build_user_encoder

from . import left_padded


def test_receptive_field_follows_the_dilations():
    # One block: kernel 3 with dilations 1 and 2 sees 1 + 2 * 1 + 2 * 2 = 7 positions back to t - 6.
    torch.manual_seed(0)
    encoder = build_user_encoder("nextitnet", 16, 12, None, {"dilations": [1], "n_repeats": 1}).eval()
    vectors, valid = left_padded([12], 12)
    out = encoder(vectors, valid)[0, -1]
    for position, visible in [(4, False), (5, True), (11, True)]:
        changed = vectors.clone()
        changed[0, position] = torch.randn(16)
        assert torch.allclose(encoder(changed, valid)[0, -1], out) != visible


def test_config_builds_the_repeated_stack():
    encoder = build_user_encoder("nextitnet", 16, 12, None, {"dilations": [1, 4], "n_repeats": 2})
    dilations = [conv.dilation[0] for block in encoder.blocks for conv in block.convs]
    assert dilations == [1, 2, 4, 8, 1, 2, 4, 8]
