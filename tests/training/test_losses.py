import math

import pytest
import torch

from transrec.training.losses import (
    bce_loss,
    false_negative_rows,
    full_softmax_loss,
    inbatch_softmax_loss,
    log_q_from_counts,
    loss_positions,
)


def softplus(x):
    return math.log(1 + math.exp(x))


def test_bce_by_hand_and_padding_gets_no_gradient():
    # B=1, L=3, d=2, k=1. Position 0 is padding (weight 0) with wild values; positions 1 and 2 are valid.
    hidden = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    pos = torch.tensor([[[5.0, -5.0], [2.0, 0.0], [0.0, 0.5]]])
    neg = torch.tensor([[[[-7.0, 3.0]], [[-1.0, 0.0]], [[0.0, 3.0]]]])
    weight = torch.tensor([[False, True, True]])
    loss = bce_loss(hidden, pos, neg, weight)
    # Position 1: logits pos 2, neg -1 -> log(1+e^-2) + log(1+e^-1).
    # Position 2: logits pos 0.5, neg 3 -> log(1+e^-0.5) + log(1+e^3). Mean of the two positions.
    expected = (softplus(-2) + softplus(-1) + softplus(-0.5) + softplus(3)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.equal(hidden.grad[0, 0], torch.zeros(2))
    assert hidden.grad[0, 1].abs().sum() > 0


def test_bce_averages_several_negatives_per_position():
    hidden = torch.tensor([[[1.0]]])
    pos = torch.tensor([[[2.0]]])
    neg = torch.tensor([[[[-1.0], [1.0]]]])  # k=2: negative logits -1 and 1
    # log(1+e^-2) + (log(1+e^-1) + log(1+e^1)) / 2
    expected = softplus(-2) + (softplus(-1) + softplus(1)) / 2
    assert bce_loss(hidden, pos, neg, torch.ones(1, 1)).item() == pytest.approx(expected, rel=1e-6)
    # No negatives: only the positive term remains.
    none = bce_loss(hidden, pos, neg[:, :, :0], torch.ones(1, 1))
    assert none.item() == pytest.approx(softplus(-2), rel=1e-6)


# One position, d=1, hidden 1; three unique items with vectors 2, 1, 0 -> logits [2, 1, 0], target item 0.
HIDDEN, ITEMS, TARGET = torch.tensor([[1.0]]), torch.tensor([[2.0], [1.0], [0.0]]), torch.tensor([0])


def lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


def test_inbatch_softmax_by_hand():
    # -2 + log(e^2 + e^1 + e^0)
    assert inbatch_softmax_loss(HIDDEN, TARGET, ITEMS).item() == pytest.approx(-2 + lse(2, 1, 0), rel=1e-6)
    # Temperature 0.5 doubles the logits: -4 + log(e^4 + e^2 + e^0)
    halved = inbatch_softmax_loss(HIDDEN, TARGET, ITEMS, temperature=0.5)
    assert halved.item() == pytest.approx(-4 + lse(4, 2, 0), rel=1e-6)


def test_false_negative_mask_removes_items_but_never_the_target():
    # Item 1 is another item of the same user: it leaves the denominator -> -2 + log(e^2 + e^0).
    mask = torch.tensor([[False, True, False]])
    loss = inbatch_softmax_loss(HIDDEN, TARGET, ITEMS, false_negative_mask=mask)
    assert loss.item() == pytest.approx(-2 + lse(2, 0), rel=1e-6)
    # The target is in the user's history too (it always is): masking it is ignored, same value.
    mask = torch.tensor([[True, True, False]])
    loss = inbatch_softmax_loss(HIDDEN, TARGET, ITEMS, false_negative_mask=mask)
    assert loss.item() == pytest.approx(-2 + lse(2, 0), rel=1e-6)
    # Everything but the target masked: the only class left is right, loss 0.
    everything = inbatch_softmax_loss(HIDDEN, TARGET, ITEMS, false_negative_mask=torch.ones(1, 3, dtype=bool))
    assert everything.item() == pytest.approx(0.0, abs=1e-7)


def test_log_q_correction_subtracts_log_sampling_probability():
    # Counts 2, 1, 1 of 4 training interactions -> q = 0.5, 0.25, 0.25.
    counts = torch.tensor([0, 2, 1, 1])
    log_q = log_q_from_counts(counts, torch.tensor([1, 2, 3]))
    assert log_q.tolist() == pytest.approx([math.log(0.5), math.log(0.25), math.log(0.25)], rel=1e-6)
    # Logits [2 - log 0.5, 1 - log 0.25, 0 - log 0.25] = [2 + 0.693, 1 + 1.386, 1.386]; target item 0.
    loss = inbatch_softmax_loss(HIDDEN, TARGET, ITEMS, log_q=log_q)
    shifted = (2 + math.log(2), 1 + math.log(4), math.log(4))
    assert loss.item() == pytest.approx(-shifted[0] + lse(*shifted), rel=1e-6)
    # The target is the most popular item, so its logit gains least from the correction: the loss rises.
    assert loss.item() > inbatch_softmax_loss(HIDDEN, TARGET, ITEMS).item()
    # Items never seen in training count as 1 (finite), padding counts as 0.
    unseen = log_q_from_counts(torch.tensor([0, 3, 0]), torch.tensor([1, 2]))
    assert unseen.tolist() == pytest.approx([math.log(0.75), math.log(0.25)], rel=1e-6)


def test_full_softmax_ignores_the_padding_column():
    hidden = torch.tensor([[1.0]])
    table = torch.tensor([[100.0], [1.0], [2.0], [3.0]])  # row 0 is padding with a huge score
    # Target item 2: -2 + log(e^1 + e^2 + e^3); row 0 is not a class.
    loss = full_softmax_loss(hidden, torch.tensor([2]), table)
    assert loss.item() == pytest.approx(-2 + lse(1, 2, 3), rel=1e-6)
    table[0] = -100.0
    assert full_softmax_loss(hidden, torch.tensor([2]), table).item() == pytest.approx(loss.item())
    with pytest.raises(ValueError, match="padding"):
        full_softmax_loss(hidden, torch.tensor([0]), table)


def test_loss_positions_and_false_negative_rows():
    targets = torch.tensor([[0, 5, 6], [7, 0, 8], [0, 0, 0]])
    assert loss_positions(targets, "s2s").tolist() == [[False, True, True], [True, False, True], [False] * 3]
    assert loss_positions(targets, "masked").tolist() == loss_positions(targets, "s2s").tolist()
    assert loss_positions(targets, "s2o").tolist() == [
        [False, False, True],
        [False, False, True],
        [False] * 3,
    ]
    with pytest.raises(ValueError):
        loss_positions(targets, "dssm")
    in_history = torch.tensor([[True, False], [False, True], [True, True]])
    rows = false_negative_rows(in_history, loss_positions(targets, "s2s"))
    # Positions in row-major order: (0,1), (0,2), (1,0), (1,2) -> users 0, 0, 1, 1.
    assert rows.tolist() == [[True, False], [True, False], [False, True], [False, True]]


def test_history_membership_by_hand():
    from transrec.training.step import history_membership

    histories = torch.tensor([[3, 5, 0], [1, 0, 0], [2, 4, 6]])  # right-padded with the padding item 0
    items = torch.tensor([5, 1, 6, 3])
    expected = torch.tensor([[True, False, False, True], [False, True, False, False],
                             [False, False, True, False]])  # fmt: skip
    assert torch.equal(history_membership(histories, items), expected)
