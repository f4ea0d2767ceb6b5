"""TransRec's objectives against hand computations (eq. 8-10)."""

import math

import pytest
import torch

from transrec.training.transrec_objectives import cpc_loss, uep_loss


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_cpc_by_hand():
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    positives = torch.tensor([[[1.0, 1.0], [2.0, 0.0]], [[0.0, 1.0], [5.0, 5.0]]])
    valid = torch.tensor([[True, True], [True, False]])  # user 1 has one positive only
    negatives = torch.tensor([[[-1.0, 0.0]], [[0.0, 0.5]]])
    first = log_sigmoid(1) + log_sigmoid(2) + log_sigmoid(1)  # log(1 - sigma(-1)) = log sigma(1)
    second = log_sigmoid(2) + log_sigmoid(-1)
    assert cpc_loss(users, positives, valid, negatives).item() == pytest.approx(
        -(first + second) / 2, rel=1e-6
    )


def test_uep_by_hand():
    states = torch.tensor([[1.0, -1.0]])
    weight = torch.tensor([[9.0, 1.0, -2.0, 0.5], [9.0, 0.0, 1.0, 0.5]])  # item 0 (padding) would win
    bias = torch.tensor([0.0, 0.0, 0.0, 1.0])
    # ReLU(logits) over items 1..3 = (1, 0, 1); the target is item 3.
    expected = -math.log(math.e / (math.e + 1 + math.e))
    assert uep_loss(states, torch.tensor([3]), weight, bias).item() == pytest.approx(expected, rel=1e-6)


def test_uep_backpropagates_to_states_head_and_bias_but_never_through_the_padding_column():
    torch.manual_seed(0)
    states = torch.randn(5, 4, requires_grad=True)
    weight = torch.randn(4, 7, requires_grad=True)
    bias = torch.randn(7, requires_grad=True)
    uep_loss(states, torch.tensor([1, 2, 6, 3, 1]), weight, bias).backward()
    assert states.grad.abs().sum() > 0 and weight.grad[:, 1:].abs().sum() > 0
    assert bias.grad[1:].abs().sum() > 0
    assert not weight.grad[:, 0].any() and bias.grad[0] == 0
