"""Non-learned baselines, scored with the same full-ranking protocol as every model.

They need no training loop, so they give a floor that any learned model must clear on a dataset:
``random`` (a seeded random ranking), ``popularity`` (training interaction counts) and ``transition``
(a first-order Markov chain: how often item j directly followed the user's last item in training
sequences, ties broken by popularity).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from transrec.data.prepared import PreparedDataset
from transrec.registry import Registry

#: A scorer gets user indices and their histories (list of item-index arrays) -> scores [B, n_items + 1].
Scorer = Callable[[np.ndarray, list[np.ndarray]], torch.Tensor]

BASELINES: Registry[Callable[[PreparedDataset, int], Scorer]] = Registry("baseline")


def _training_items(dataset: PreparedDataset) -> tuple[np.ndarray, np.ndarray]:
    """Training interactions (each user's sequence without its last two items) as (users, items)."""
    split = dataset.split
    lengths = split.train_ends - split.starts
    users = np.repeat(np.arange(dataset.n_users), lengths)
    rows = np.concatenate([np.arange(s, e) for s, e in zip(split.starts, split.train_ends)])
    return users, np.asarray(dataset.items)[rows]


def _popularity(dataset: PreparedDataset) -> torch.Tensor:
    _, items = _training_items(dataset)
    return torch.from_numpy(np.bincount(items, minlength=dataset.n_items + 1).astype(np.float32))


@BASELINES.register("random")
def random_scorer(dataset: PreparedDataset, seed: int = 0) -> Scorer:
    generator = torch.Generator().manual_seed(seed)

    def score(users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        return torch.rand(len(users), dataset.n_items + 1, generator=generator)

    return score


@BASELINES.register("popularity")
def popularity_scorer(dataset: PreparedDataset, seed: int = 0) -> Scorer:
    counts = _popularity(dataset)

    def score(users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        return counts.expand(len(users), -1).clone()

    return score


@BASELINES.register("transition")
def transition_scorer(dataset: PreparedDataset, seed: int = 0) -> Scorer:
    users, items = _training_items(dataset)
    same_user = users[1:] == users[:-1]
    n = dataset.n_items + 1
    # Transition counts as a sparse matrix in CSR form (rows: previous item), so memory grows with the
    # number of distinct transitions, not with the square of the catalogue.
    pairs, counts = np.unique(
        items[:-1][same_user].astype(np.int64) * n + items[1:][same_user], return_counts=True
    )
    rows, cols = pairs // n, pairs % n
    row_ptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=n))))
    popularity = _popularity(dataset)
    # Popularity scaled below one transition count only breaks ties between equal transition counts.
    tie_break = popularity / (popularity.max() + 1.0)

    def score(batch_users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        last = np.array([int(h[-1]) if len(h) else 0 for h in histories], dtype=np.int64)
        starts, ends = row_ptr[last], row_ptr[last + 1]
        lengths = ends - starts
        batch_rows = np.repeat(np.arange(len(last)), lengths)
        entries = (
            np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)])
            if lengths.sum()
            else np.zeros(0, int)
        )
        scores = tie_break.expand(len(last), -1).clone()
        scores[torch.from_numpy(batch_rows), torch.from_numpy(cols[entries])] += torch.from_numpy(
            counts[entries].astype(np.float32)
        )
        return scores

    return score
