"""The UserEncoder contract, checked on every registered encoder: padding (its vectors and its amount)
changes nothing, padded outputs are zero and get no gradient, causal encoders ignore the future."""

from __future__ import annotations

import pytest
import torch

from transrec.config import ConfigError
from transrec.models.user_encoders import USER_ENCODERS, build_user_encoder

from . import left_padded, repad

D_MODEL, MAX_LEN = 16, 12
LENGTHS = [8, 5, 1, 0]  # a full row at L=8, a partial one, a single item and a row without items
USER_IDS = torch.tensor([0, 1, 2, 3])
NAMES = USER_ENCODERS.names()
CAUSAL = [name for name in NAMES if USER_ENCODERS.get(name).causal]


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    encoder = build_user_encoder(name, D_MODEL, MAX_LEN, n_users=5, config={})
    # Default inits hide leaks (LayerNorm biases start at 0, so LN(0) = 0); perturb every parameter.
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return encoder.eval()


def run(encoder, vectors, valid):
    return encoder(vectors, valid, user_ids=USER_IDS[: len(vectors)])


def test_every_encoder_is_registered():
    assert NAMES == ["bert4rec", "dssm", "gru4rec", "mean_pool", "nextitnet", "sasrec"]
    assert CAUSAL == ["dssm", "gru4rec", "mean_pool", "nextitnet", "sasrec"]


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_zero_padded_outputs(name):
    vectors, valid = left_padded(LENGTHS, 8)
    out = run(build(name), vectors, valid)
    assert out.shape == (4, 8, D_MODEL) and out.dtype == vectors.dtype
    assert torch.isfinite(out).all()  # the row without items included
    assert torch.all(out[~valid] == 0)


@pytest.mark.parametrize("name", NAMES)
def test_garbage_at_padded_positions_changes_nothing(name):
    vectors, valid = left_padded(LENGTHS, 8)
    garbage = vectors.clone()
    garbage[~valid] = torch.randn(int((~valid).sum()), D_MODEL) * 1e4
    garbage[3, 0, 0] = float("nan")  # even NaN must not leak (masking by product would turn it into NaN)
    encoder = build(name)
    torch.testing.assert_close(run(encoder, garbage, valid), run(encoder, vectors, valid), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_amount_of_left_padding_changes_nothing(name):
    vectors, valid = left_padded(LENGTHS, 8)
    longer, longer_valid = repad(vectors, valid, 12)
    encoder = build(name)
    short_out, long_out = run(encoder, vectors, valid), run(encoder, longer, longer_valid)
    torch.testing.assert_close(long_out[:, 4:][valid], short_out[valid], atol=1e-5, rtol=0)
    assert torch.all(long_out[~longer_valid] == 0)


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_state_ignores_later_items(name):
    vectors, valid = left_padded([12, 9, 6], 12)
    later = vectors.clone()
    later[:, 8:] = torch.randn(3, 4, D_MODEL)
    encoder = build(name)
    out, out_later = run(encoder, vectors, valid), run(encoder, later, valid)
    torch.testing.assert_close(out_later[:, :8], out[:, :8], atol=1e-5, rtol=0)
    if not encoder.uses_user_ids:  # the change must be visible somewhere, or the check above proves nothing
        assert not torch.allclose(out_later[:, 8:], out[:, 8:])


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_valid_items_and_never_padded_ones(name):
    vectors, valid = left_padded(LENGTHS, 8)
    vectors.requires_grad_(True)
    encoder = build(name).train()  # with dropout active
    out = run(encoder, vectors, valid)
    # Random weights: a plain sum of a LayerNorm output is constant and would give zero gradients.
    (out * torch.randn_like(out)).sum().backward()
    grad = vectors.grad if vectors.grad is not None else torch.zeros_like(vectors)
    assert torch.all(grad[~valid] == 0)
    if not encoder.uses_user_ids:  # the DSSM user tower ignores the items by design
        assert torch.all(grad[valid].abs().sum(-1) > 0)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    vectors, valid = left_padded(LENGTHS, 8)
    first, second = build(name, seed=3), build(name, seed=3)
    out = run(first, vectors, valid)
    assert torch.equal(run(first, vectors, valid), out)
    assert torch.equal(run(second, vectors, valid), out)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_config_key_is_refused(name):
    with pytest.raises(ConfigError, match="no_such_key"):
        build_user_encoder(name, D_MODEL, MAX_LEN, n_users=5, config={"no_such_key": 1})


def test_unknown_encoder_name_is_refused():
    with pytest.raises(KeyError, match="known: bert4rec"):
        build_user_encoder("lstm", D_MODEL, MAX_LEN, n_users=None, config={})
