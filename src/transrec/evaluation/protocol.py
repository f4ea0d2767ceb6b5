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


def evaluate_scorer(
    dataset: PreparedDataset,
    scorer: Scorer,
    stage: str = "test",
    ks: Sequence[int] = (5, 10, 20, 50),
    batch_size: int = 1024,
    exclude_history: bool = True,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR of ``scorer`` over ``users`` (default: all users) on ``stage``."""
    histories, targets = stage_histories(dataset, stage)
    users = np.arange(dataset.n_users) if users is None else np.asarray(users)
    metrics = RankingMetrics(ks, n_items=dataset.n_items)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        batch_histories = [histories[u] for u in batch]
        scores = scorer(batch, batch_histories)
        exclude = [torch.from_numpy(h.astype(np.int64)) for h in batch_histories] if exclude_history else None
        ranks = target_ranks(scores, torch.from_numpy(targets[batch].astype(np.int64)), exclude)
        metrics.update(ranks)
    return metrics.compute()
