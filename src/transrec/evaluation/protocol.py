"""The evaluation protocol on a prepared dataset: leave-one-out, full ranking, history excluded.

``evaluate_scorer`` walks the users in batches, asks a scorer for a ``[batch, n_items + 1]`` score matrix
from each user's history, ranks the target against the whole catalogue, and aggregates exact sums, so
the result does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from transrec.data.prepared import PreparedDataset
from transrec.evaluation.ranking import RankingMetrics, target_ranks

Scorer = Callable[[np.ndarray, list[np.ndarray]], torch.Tensor]


def stage_histories(dataset: PreparedDataset, stage: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-user input histories (item indices, oldest first) and targets of ``stage`` (valid or test)."""
    split = dataset.split
    ends = split.history_ends(stage)
    items = np.asarray(dataset.items)
    histories = [items[s:e] for s, e in zip(split.starts, ends)]
    return histories, split.targets(stage)


def absent_items(dataset: PreparedDataset, stage: str) -> np.ndarray:
    """Items that do not exist yet at ``stage`` and are not ranked there: the new-item protocol's items
    (``PreparedDataset.item_is_new``) at validation, which stands before they arrive; none at test."""
    if stage == "valid":
        return np.flatnonzero(dataset.item_is_new).astype(np.int64)
    return np.zeros(0, dtype=np.int64)


def exclusion_lists(
    histories: Sequence[np.ndarray], exclude_history: bool, absent: np.ndarray
) -> list[torch.Tensor] | None:
    """Per-user items left out of the ranking: the history (unless ``exclude_history`` is False) and the
    ``absent`` items; None when there is nothing to leave out."""
    if not exclude_history and not len(absent):
        return None
    if not len(absent):
        return [torch.from_numpy(h.astype(np.int64)) for h in histories]
    rows = (np.union1d(h if exclude_history else [], absent) for h in histories)
    return [torch.from_numpy(row.astype(np.int64)) for row in rows]


def evaluate_scorer(
    dataset: PreparedDataset,
    scorer: Scorer,
    stage: str = "test",
    ks: Sequence[int] = (5, 10, 20, 50),
    batch_size: int = 1024,
    exclude_history: bool = True,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR of ``scorer`` over ``users`` (default: all users) on ``stage``; the items of
    ``absent_items`` are not ranked."""
    histories, targets = stage_histories(dataset, stage)
    absent = absent_items(dataset, stage)
    users = np.arange(dataset.n_users) if users is None else np.asarray(users)
    metrics = RankingMetrics(ks, n_items=dataset.n_items)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        batch_histories = [histories[u] for u in batch]
        scores = scorer(batch, batch_histories)
        exclude = exclusion_lists(batch_histories, exclude_history, absent)
        ranks = target_ranks(scores, torch.from_numpy(targets[batch].astype(np.int64)), exclude)
        metrics.update(ranks)
    return metrics.compute()
