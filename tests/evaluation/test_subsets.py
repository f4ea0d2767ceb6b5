import numpy as np
import pytest
import torch

from transrec.evaluation import (
    cold_item_users,
    evaluation_subsets,
    item_interaction_counts,
    iterative_filter,
    new_item_users,
    warm_item_users,
)

# Counted (training) interactions of four users over five items, and their test targets:
#   u0: 1 2 3 -> 4      u1: 1 2 -> 1      u2: 1 3 -> 5      u3: 2 1 -> 3
# Item counts: 1: 4, 2: 3, 3: 2, 4: 0, 5: 0.
OFFSETS = torch.tensor([0, 3, 5, 7, 9])
ITEMS = torch.tensor([1, 2, 3, 1, 2, 1, 3, 2, 1])
TARGETS = torch.tensor([4, 1, 5, 3])


def test_item_counts():
    assert item_interaction_counts(OFFSETS, ITEMS, n_items=5).tolist() == [0, 4, 3, 2, 0, 0]


def test_cold_and_new_items():
    # Target counts: u0 -> 0, u1 -> 4, u2 -> 0, u3 -> 2.
    assert cold_item_users(OFFSETS, ITEMS, TARGETS, n_items=5, threshold=3).tolist() == [
        True,
        False,
        True,
        True,
    ]
    assert cold_item_users(OFFSETS, ITEMS, TARGETS, n_items=5, threshold=2).tolist() == [
        True,
        False,
        True,
        False,
    ]
    assert cold_item_users(OFFSETS, ITEMS, TARGETS, n_items=5).tolist() == [True, True, True, True]  # < 10
    assert new_item_users(OFFSETS, ITEMS, TARGETS, n_items=5).tolist() == [True, False, True, False]


def test_numpy_input():
    mask = new_item_users(OFFSETS.numpy(), ITEMS.numpy(), np.array([4, 1, 5, 3]), n_items=5)
    assert mask.tolist() == [True, False, True, False]


# A cascade for iterative filtering (min_user_interactions = 2):
#   u0: 1 2    u1: 1 3    u2: 2 4    u3: 1 2 3        item counts 1: 3, 2: 3, 3: 2, 4: 1
# N = 2: item 4 goes -> u2 keeps one interaction and goes -> item 2 falls to 2, still enough.
#        Survivors: items {1, 2, 3}, users {u0, u1, u3}.
# N = 3: items 3, 4 go -> u1 and u2 keep one each and go -> items 1 and 2 fall to 2 and go -> nothing.
CASCADE_OFFSETS = torch.tensor([0, 2, 4, 6, 9])
CASCADE_ITEMS = torch.tensor([1, 2, 1, 3, 2, 4, 1, 2, 3])
CASCADE_TARGETS = torch.tensor([3, 1, 1, 4])


def test_iterative_filter_cascade():
    items, users = iterative_filter(CASCADE_OFFSETS, CASCADE_ITEMS, 4, 2, min_user_interactions=2)
    assert items.tolist() == [False, True, True, True, False]
    assert users.tolist() == [True, True, False, True]
    items, users = iterative_filter(CASCADE_OFFSETS, CASCADE_ITEMS, 4, 3, min_user_interactions=2)
    assert not items.any() and not users.any()  # items 1 and 2 started with 3 interactions, yet fall


def test_warm_users():
    # warm-2: u0 (target 3) and u1 (target 1) survive with surviving targets; u2 was dropped; u3's
    # target 4 was dropped.
    warm = warm_item_users(CASCADE_OFFSETS, CASCADE_ITEMS, CASCADE_TARGETS, 4, 2, min_user_interactions=2)
    assert warm.tolist() == [True, True, False, False]
    # With the default min_user_interactions = 5 no user here survives.
    assert not warm_item_users(CASCADE_OFFSETS, CASCADE_ITEMS, CASCADE_TARGETS, 4, 1).any()


def test_evaluation_subsets_bundle():
    subsets = evaluation_subsets(
        OFFSETS, ITEMS, TARGETS, 5, cold_threshold=3, warm_ns=(3,), min_user_interactions=2
    )
    assert list(subsets) == ["regular", "cold", "new", "warm-3"]
    assert subsets["regular"].tolist() == [True] * 4
    assert subsets["cold"].tolist() == [True, False, True, True]
    assert subsets["new"].tolist() == [True, False, True, False]
    # Iterative filter at N = 3: items 4, 5 (0) and 3 (2) go; u2 keeps only item 1 and goes; item 1
    # falls to 3 and item 2 stays at 3. Survivors: items {1, 2}, users {u0, u1, u3}; only u1's target is warm.
    assert subsets["warm-3"].tolist() == [False, True, False, False]


@pytest.mark.parametrize(
    ("offsets", "items", "targets", "message"),
    [
        (torch.tensor([0, 3, 5]), ITEMS, TARGETS[:2], "from 0 to len"),
        (torch.tensor([0, 5, 3, 7, 9]), ITEMS, TARGETS, "never decrease"),
        (OFFSETS, torch.tensor([1, 2, 3, 1, 2, 1, 3, 2, 0]), TARGETS, r"1\.\.5"),
        (OFFSETS, ITEMS, torch.tensor([4, 1, 5]), "3 entries"),
        (OFFSETS, ITEMS, torch.tensor([4, 1, 6, 3]), r"1\.\.5"),
        (OFFSETS, ITEMS.float(), TARGETS, "integer"),
    ],
)
def test_bad_input_raises(offsets, items, targets, message):
    with pytest.raises(ValueError, match=message):
        cold_item_users(offsets, items, targets, n_items=5)
