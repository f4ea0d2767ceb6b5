"""PMMRec's objectives against small examples computed by hand (eq. 5-11)."""

import math

import pytest
import torch

from transrec.training.pmmrec_objectives import (
    REPLACED,
    SHUFFLED,
    corrupt_sequences,
    cross_modal_loss,
    dap_loss,
    nid_loss,
    rcl_loss,
)

E = math.exp


def test_dap_by_hand():
    hidden = torch.tensor([[[1.0], [9.0]], [[2.0], [9.0]]])  # the last states predict nothing
    items = torch.tensor([[[0.5], [1.0]], [[-1.0], [0.0]]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    # user 0: h=1 predicts e=1 against user 1's items (-1, 0); user 1: h=2 predicts 0 against (0.5, 1).
    first = -math.log(E(1) / (E(1) + E(-1) + E(0)))
    second = -math.log(E(0) / (E(0) + E(1) + E(2)))
    assert dap_loss(hidden, items, valid).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_dap_ignores_padding():
    hidden = torch.tensor([[[0.0], [1.0], [9.0]], [[7.0], [2.0], [9.0]]])
    items = torch.tensor([[[5.0], [0.5], [1.0]], [[5.0], [-1.0], [0.0]]])
    valid = torch.tensor([[False, True, True], [False, True, True]])  # padding holds garbage
    first = -math.log(E(1) / (E(1) + E(-1) + E(0)))
    second = -math.log(E(0) / (E(0) + E(1) + E(2)))
    assert dap_loss(hidden, items, valid).item() == pytest.approx((first + second) / 2, rel=1e-6)


TEXT = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])  # normalised: t0 = (1, 0), t1 = (0, 1)
IMAGE = torch.tensor([[[3.0, 0.0]], [[0.6, 0.8]]])  # v0 = (1, 0), v1 = (0.6, 0.8)
ONE = torch.ones(2, 1, dtype=torch.bool)


def test_vcl_by_hand():
    text_to_image = [-math.log(E(1) / (E(1) + E(0.6))), -math.log(E(0.8) / (E(0.8) + E(0)))]
    image_to_text = [-math.log(E(1) / (E(1) + E(0))), -math.log(E(0.8) / (E(0.8) + E(0.6)))]
    expected = (sum(text_to_image) / 2 + sum(image_to_text) / 2) / 2
    assert cross_modal_loss(TEXT, IMAGE, ONE, "vcl").item() == pytest.approx(expected, rel=1e-6)


def test_icl_adds_intra_modality_negatives_by_hand():
    # t0.t1 = 0 and v0.v1 = 0.6 join the denominators.
    text_to_image = [-math.log(E(1) / (E(1) + E(0.6) + E(0))), -math.log(E(0.8) / (E(0.8) + E(0) + E(0)))]
    image_to_text = [-math.log(E(1) / (E(1) + E(0) + E(0.6))), -math.log(E(0.8) / (E(0.8) + E(0.6) + E(0.6)))]
    expected = (sum(text_to_image) / 2 + sum(image_to_text) / 2) / 2
    assert cross_modal_loss(TEXT, IMAGE, ONE, "icl").item() == pytest.approx(expected, rel=1e-6)
    half = cross_modal_loss(TEXT, IMAGE, ONE, "icl", temperature=0.5).item()
    assert half != pytest.approx(expected)  # the temperature divides every similarity


def _nicl_reference(text, image, valid, temperature):
    """Eq. 8-9 with scalar loops (unit vectors given)."""

    def delta(a, b):
        return E(sum(x * y for x, y in zip(a, b, strict=True)) / temperature)

    batch, length = len(text), len(text[0])
    total, count = 0.0, 0
    for first, second in ((text, image), (image, text)):
        for u in range(batch):
            for pos in range(length - 1):
                if not (valid[u][pos] and valid[u][pos + 1]):
                    continue
                anchor = first[u][pos]
                numerator = (
                    delta(anchor, second[u][pos])
                    + delta(anchor, second[u][pos + 1])
                    + delta(anchor, first[u][pos + 1])
                )
                denominator = delta(anchor, second[u][pos])
                for k in range(batch):
                    for j in range(length):
                        if k != u and valid[k][j]:
                            denominator += delta(anchor, second[k][j]) + delta(anchor, first[k][j])
                total += -math.log(numerator / denominator)
                count += 1
    return total / count


def test_nicl_by_hand():
    text = [[(1.0, 0.0), (0.0, 1.0), (0.6, 0.8)], [(0.8, 0.6), (1.0, 0.0), (0.0, 1.0)]]
    image = [[(0.0, 1.0), (1.0, 0.0), (0.8, 0.6)], [(0.6, 0.8), (0.0, 1.0), (1.0, 0.0)]]
    valid = [[False, True, True], [True, True, True]]
    expected = _nicl_reference(text, image, valid, temperature=0.5)
    got = cross_modal_loss(
        torch.tensor(text), torch.tensor(image), torch.tensor(valid), "nicl", temperature=0.5
    )
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_corruption_shuffles_and_replaces_the_requested_shares():
    items = torch.arange(1, 41).view(2, 20)
    valid = torch.ones(2, 20, dtype=torch.bool)
    valid[1, :10] = False
    corrupted, labels = corrupt_sequences(items, valid, torch.Generator().manual_seed(0))
    assert (labels[0] == SHUFFLED).sum() == 3 and (labels[0] == REPLACED).sum() == 1
    assert (labels[1] == SHUFFLED).sum() == 2 and (
        labels[1] == REPLACED
    ).sum() == 0  # 15% of 10, 5% rounds to 0
    assert (labels[~valid] == 0).all() and torch.equal(corrupted[~valid], items[~valid])
    for row in range(2):  # shuffled positions exchange their own items
        moved = labels[row] == SHUFFLED
        assert sorted(corrupted[row, moved].tolist()) == sorted(items[row, moved].tolist())
    assert torch.equal(corrupted[labels == 0], items[labels == 0])
    assert set(corrupted[labels == REPLACED].tolist()) <= set(items[valid].tolist())
    again, _ = corrupt_sequences(items, valid, torch.Generator().manual_seed(0))
    assert torch.equal(again, corrupted)


def test_nid_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[0, 2, 1]])
    valid = torch.tensor([[True, True, False]])
    first = -math.log(E(2) / (E(2) + 2))
    second = -math.log(1 / (2 + E(1)))
    assert nid_loss(logits, labels, valid).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_rcl_by_hand():
    pooled = torch.tensor([[1.0], [2.0]])
    corrupted = torch.tensor([[1.0], [-1.0]])
    first = -math.log(E(1) / (E(1) + E(-1)))
    second = -math.log(E(-2) / (E(-2) + E(2)))
    assert rcl_loss(pooled, corrupted).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_other_users_copies_of_the_positive_are_not_negatives():
    hidden = torch.tensor([[[1.0], [9.0]], [[2.0], [9.0]]])
    items = torch.tensor([[[0.5], [1.0]], [[-1.0], [0.0]]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    ids = torch.tensor([[1, 2], [2, 3]])  # user 1's first item is user 0's positive (item 2)
    first = -math.log(E(1) / (E(1) + E(0)))  # item 2 of user 1 (vector -1) left out
    second = -math.log(E(0) / (E(0) + E(1) + E(2)))
    assert dap_loss(hidden, items, valid, ids).item() == pytest.approx((first + second) / 2, rel=1e-6)
    same = torch.tensor([[1, 2], [3, 4]])  # no shared item: the paper's literal loss
    assert dap_loss(hidden, items, valid, same).item() == pytest.approx(dap_loss(hidden, items, valid).item())


def test_cross_modal_negatives_skip_copies_of_the_anchor():
    text = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    image = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    valid = torch.ones(2, 1, dtype=torch.bool)
    shared = cross_modal_loss(text, image, valid, "vcl", item_ids=torch.tensor([[7], [7]]))
    assert shared.item() == pytest.approx(0.0, abs=1e-6)  # each anchor's only candidate is its positive
