"""Paired significance tests between two methods evaluated on the same test users over the same seeds.

Two methods A and B give a per-user metric (e.g. NDCG@10 from ``Evaluation.ranks``) for every seed s
and test user u: ``a[s, u]`` and ``b[s, u]``, where seed s of A is paired with seed s of B (the same
data order, the same source checkpoint for a transferred model) and user u is the same test user in
both. The statistic is the mean paired difference

    D = 1 / (S U) * sum_{s, u} (a[s, u] - b[s, u])

and :func:`paired_bootstrap` estimates its sampling distribution by resampling **test users** with
replacement (Efron and Tibshirani's paired bootstrap, one cluster per user): a replicate draws U users
and keeps every seed of each drawn user, so each (seed, user) difference stays paired and a user's
correlation across seeds is kept. The seeds themselves are not resampled: with three of them a
resampled set would take only ten distinct values. The interval therefore says how much D would move
with another sample of test users for these trained models; the spread over seeds (training
randomness, including a per-seed source pre-training) is reported beside it as a standard deviation.

The two-sided p-value tests D = 0 by the shifted bootstrap distribution (the replicates centred on the
null): ``p = (1 + #{|D* - D| >= |D|}) / (1 + R)``, so identical methods give p = 1 and no p-value is
below ``1 / (1 + R)``. The 95% interval is the percentile interval of the replicates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from transrec.errors import UsageError


@dataclass(frozen=True)
class BootstrapResult:
    """A paired bootstrap of ``mean(a) - mean(b)``.

    Attributes:
        mean_a, mean_b: the two means over every seed and user.
        difference: ``mean_a - mean_b`` (D above).
        relative: ``difference / mean_b`` (None when ``mean_b`` is 0).
        ci_low, ci_high: percentile interval of D at ``confidence``.
        relative_ci_low, relative_ci_high: the same interval of the relative difference, each replicate
            divided by its own ``mean_b`` (None when a replicate's ``mean_b`` is 0).
        p_value: two-sided, of D = 0 (see the module docstring).
        n: paired observations (``n_seeds * n_users``); n_seeds, n_users: the shape of the input.
        n_resamples, confidence: as asked.
    """

    mean_a: float
    mean_b: float
    difference: float
    relative: float | None
    ci_low: float
    ci_high: float
    relative_ci_low: float | None
    relative_ci_high: float | None
    p_value: float
    n: int
    n_seeds: int
    n_users: int
    n_resamples: int
    confidence: float

    def significant(self, level: float = 0.05) -> bool:
        """Whether D differs from 0 at ``level`` (two-sided)."""
        return self.p_value < level

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    chunk: int = 1_000,
) -> BootstrapResult:
    """Paired bootstrap of ``mean(a) - mean(b)`` over test users (see the module docstring).

    Args:
        a, b: per-user metrics of the two methods, ``[seeds, users]`` (or ``[users]``: one seed), with
            the same shape: row s of ``a`` pairs with row s of ``b``, column u with column u.
        n_resamples: bootstrap replicates R.
        seed: seed of the resampling (the result is a function of the inputs and this seed).
        confidence: of the percentile interval.
        chunk: replicates drawn at once (memory: ``chunk * users`` indices).

    Raises:
        UsageError: shapes that differ, no user, a value that is not finite, a bad ``n_resamples`` or
            ``confidence``.
    """
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape != b.shape:
        raise UsageError(
            f"paired_bootstrap needs a and b of the same shape [seeds, users]: got {a.shape} and {b.shape}"
        )
    if a.shape[1] == 0:
        raise UsageError("paired_bootstrap needs at least one user")
    if n_resamples < 1:
        raise UsageError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"confidence must be in (0, 1), got {confidence}")
    n_seeds, n_users = a.shape
    # Users are resampled with every seed kept, so a replicate's mean over (seed, user) is the mean over
    # its drawn users of each user's seed-averaged values: one vector per method suffices.
    user_a, user_b = a.mean(axis=0), b.mean(axis=0)
    mean_a, mean_b = float(user_a.mean()), float(user_b.mean())
    difference = mean_a - mean_b
    rng = np.random.default_rng(seed)
    boot_a = np.empty(n_resamples)
    boot_b = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        drawn = rng.integers(0, n_users, size=(size, n_users))
        boot_a[start : start + size] = user_a[drawn].mean(axis=1)
        boot_b[start : start + size] = user_b[drawn].mean(axis=1)
    boot = boot_a - boot_b
    tail = (1.0 - confidence) / 2.0
    ci_low, ci_high = (float(q) for q in np.quantile(boot, [tail, 1.0 - tail]))
    extreme = int(np.count_nonzero(np.abs(boot - difference) >= abs(difference)))
    p_value = (1 + extreme) / (1 + n_resamples)
    relative = difference / mean_b if mean_b != 0 else None
    rel_low = rel_high = None
    if relative is not None and np.all(boot_b != 0):
        rel_low, rel_high = (float(q) for q in np.quantile(boot / boot_b, [tail, 1.0 - tail]))
    return BootstrapResult(
        mean_a=mean_a, mean_b=mean_b, difference=difference, relative=relative,
        ci_low=ci_low, ci_high=ci_high,
        relative_ci_low=rel_low, relative_ci_high=rel_high, p_value=p_value,
        n=n_seeds * n_users, n_seeds=n_seeds, n_users=n_users, n_resamples=n_resamples,
        confidence=confidence,
    )  # fmt: skip


def ndcg_per_user(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """NDCG@k of each user from the rank of its single target (1 = best): ``1 / log2(rank + 1)`` when
    ``rank <= k``, else 0 (``evaluation.ranking.RankingMetrics``)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def hit_per_user(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """HR@k of each user: 1.0 when its target ranks within the top k."""
    return (np.asarray(ranks) <= k).astype(np.float64)


def normal_interval(differences: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(ci_low, ci_high, p_value)`` of the mean of i.i.d. ``differences`` by the central limit theorem:
    what the bootstrap approaches for many users (a reference for tests and sanity checks)."""
    differences = np.asarray(differences, dtype=np.float64)
    mean = float(differences.mean())
    se = float(differences.std(ddof=0)) / math.sqrt(len(differences))
    z = _normal_quantile(0.5 + confidence / 2.0)
    p = math.erfc(abs(mean) / (se * math.sqrt(2.0))) if se > 0 else (1.0 if mean == 0 else 0.0)
    return mean - z * se, mean + z * se, p


def _normal_quantile(q: float) -> float:
    # Bisection on erf: exact enough for a reference value and free of scipy.
    low, high = -10.0, 10.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def _as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2:
        raise UsageError(f"{name} must be [seeds, users] or [users], got {matrix.ndim} dimensions")
    if not np.all(np.isfinite(matrix)):
        raise UsageError(f"{name} holds a value that is not finite (NaN or infinite)")
    return matrix
