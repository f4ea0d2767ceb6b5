import numpy as np

from transrec.data import filtering


def test_chronological_order_is_stable_on_ties():
    users = np.array([1, 0, 0, 0, 1])
    times = np.array([5.0, 2.0, 1.0, 2.0, 5.0])
    order = filtering.chronological_order(users, times, np.arange(5))
    assert order.tolist() == [2, 1, 3, 0, 4]
    # An explicit tie key reverses the two same-second rows of user 0.
    order = filtering.chronological_order(users, times, np.array([0, 9, 0, 1, 0]))
    assert order.tolist() == [2, 3, 1, 0, 4]


def test_dedup_keeps_first_or_last():
    users = np.array([0, 0, 0, 1])
    items = np.array([3, 4, 3, 3])
    assert filtering.first_occurrence_mask(users, items, 5, "first").tolist() == [True, True, False, True]
    assert filtering.first_occurrence_mask(users, items, 5, "last").tolist() == [False, True, True, True]
    assert filtering.first_occurrence_mask(users, items, 5, "none").all()


def test_k_core_is_iterative():
    # Item 2 has 2 interactions: removing it drops user 1 below 2, which then drops item 1 below 2.
    users = np.array([0, 0, 1, 1, 2, 2, 0, 2])
    items = np.array([0, 1, 1, 2, 0, 3, 3, 2])
    result = filtering.k_core(users, items, 3, 4, user_k=2, item_k=3, min_split=1)
    assert result.keep.sum() == 0
    result = filtering.k_core(users, items, 3, 4, user_k=2, item_k=2, min_split=1)
    assert result.keep.all()


def test_short_users_reported_apart_from_k_core():
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([0, 1, 2, 0, 1])
    result = filtering.k_core(users, items, 2, 3, user_k=1, item_k=1)
    assert result.short_users.tolist() == [1]
    assert result.removed_users.tolist() == []
    assert result.short_user_interactions == 2
    assert result.keep.tolist() == [True, True, True, False, False]


def test_last_n_mask():
    users = np.array([0, 0, 0, 0, 1, 1, 2])
    assert filtering.last_n_mask(users, 2).tolist() == [False, False, True, True, True, True, True]
