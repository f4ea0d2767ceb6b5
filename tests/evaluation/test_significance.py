"""The paired bootstrap against cases computed by hand, by exhaustive enumeration and by the normal
approximation, and its pairing of seeds and users."""

import itertools

import numpy as np
import pytest

from transrec.errors import UsageError
from transrec.evaluation.significance import (
    hit_per_user,
    ndcg_per_user,
    normal_interval,
    paired_bootstrap,
)


def test_identical_methods_differ_by_zero_with_p_one():
    values = np.random.default_rng(0).random((3, 50))
    result = paired_bootstrap(values, values.copy(), n_resamples=500)
    assert result.difference == 0.0 and result.relative == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.p_value == 1.0 and not result.significant()
    assert (result.n, result.n_seeds, result.n_users) == (150, 3, 50)


def test_a_constant_shift_is_that_shift_with_a_degenerate_interval():
    b = np.random.default_rng(1).random((2, 40))
    result = paired_bootstrap(b + 0.25, b, n_resamples=999)
    assert result.difference == pytest.approx(0.25)
    assert result.ci_low == pytest.approx(0.25) and result.ci_high == pytest.approx(0.25)
    assert result.relative == pytest.approx(0.25 / b.mean())
    # No replicate is as far from the shift as the shift is from 0: the smallest p-value there is.
    assert result.p_value == pytest.approx(1 / 1000) and result.significant()


def test_a_small_case_matches_the_exhaustive_enumeration():
    # Four users, one seed: all 4^4 = 256 resamples are equally likely; enumerate them exactly.
    a = np.array([0.0, 1.0, 0.5, 0.0])
    b = np.array([0.0, 0.0, 0.5, 0.5])
    d = a - b
    observed = d.mean()
    exact = np.array([d[list(idx)].mean() for idx in itertools.product(range(4), repeat=4)])
    exact_p = np.mean(np.abs(exact - observed) >= abs(observed) - 1e-12)
    result = paired_bootstrap(a, b, n_resamples=200_000, seed=3)
    assert result.difference == pytest.approx(observed)
    assert result.p_value == pytest.approx(exact_p, abs=0.005)  # sampling error about 0.001
    # The percentile bounds sit where the exact distribution crosses 2.5% and 97.5%.
    assert np.mean(exact < result.ci_low - 1e-12) <= 0.025 <= np.mean(exact <= result.ci_low + 1e-12)
    assert np.mean(exact < result.ci_high - 1e-12) <= 0.975 <= np.mean(exact <= result.ci_high + 1e-12)


def test_many_users_agree_with_the_normal_approximation():
    rng = np.random.default_rng(4)
    b = rng.random(4000)
    a = b + rng.normal(0.005, 0.1, 4000)
    result = paired_bootstrap(a, b, n_resamples=20_000, seed=5)
    low, high, p = normal_interval(a - b)
    width = high - low
    assert result.ci_low == pytest.approx(low, abs=0.05 * width)
    assert result.ci_high == pytest.approx(high, abs=0.05 * width)
    assert result.p_value == pytest.approx(p, abs=0.01)


def test_the_pairing_of_seeds_and_users_is_kept():
    # Users differ a lot (b), A is B plus 0.02 for every (seed, user): paired, the gain is certain.
    rng = np.random.default_rng(6)
    seeds, users = 3, 500
    b = rng.random(users)[None, :] + rng.normal(0, 0.05, (seeds, 1)) + rng.normal(0, 0.002, (seeds, users))
    a = b + 0.02 + rng.normal(0, 0.005, (seeds, users))
    paired = paired_bootstrap(a, b, n_resamples=2000)
    assert paired.significant(0.001) and paired.ci_high - paired.ci_low < 0.005
    assert paired.ci_low < 0.02 < paired.ci_high
    # The same numbers with the users of A shuffled within each seed: the pairing is gone, and with it
    # the certainty (users' own spread, about 0.29, now enters every difference).
    shuffled = np.stack([row[rng.permutation(users)] for row in a])
    unpaired = paired_bootstrap(shuffled, b, n_resamples=2000)
    assert unpaired.ci_high - unpaired.ci_low > 0.02 and not unpaired.significant(0.001)


def test_the_result_is_a_function_of_the_seed():
    rng = np.random.default_rng(7)
    a, b = rng.random((2, 30)), rng.random((2, 30))
    assert paired_bootstrap(a, b, seed=1) == paired_bootstrap(a, b, seed=1)
    assert paired_bootstrap(a, b, seed=1).ci_low != paired_bootstrap(a, b, seed=2).ci_low


def test_bad_input_names_the_problem():
    with pytest.raises(UsageError, match="same shape"):
        paired_bootstrap(np.zeros((3, 10)), np.zeros((2, 10)))
    with pytest.raises(UsageError, match="not finite"):
        paired_bootstrap(np.array([0.1, np.nan]), np.zeros(2))
    with pytest.raises(UsageError, match="at least one user"):
        paired_bootstrap(np.zeros((1, 0)), np.zeros((1, 0)))
    with pytest.raises(UsageError, match="n_resamples"):
        paired_bootstrap(np.zeros(3), np.zeros(3), n_resamples=0)


def test_per_user_metrics_from_ranks():
    ranks = np.array([1, 3, 10, 11])
    assert ndcg_per_user(ranks, 10) == pytest.approx([1.0, 0.5, 1 / np.log2(11), 0.0])
    assert hit_per_user(ranks, 10).tolist() == [1.0, 1.0, 1.0, 0.0]
