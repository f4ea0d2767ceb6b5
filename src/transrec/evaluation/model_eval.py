"""Evaluating a trained ``SequentialRecommender`` on a prepared dataset (leave-one-out, full ranking).

Item vectors are computed once per evaluation, for every item, in chunks of distinct items (the same
``ItemBatch`` path as training); user vectors come from the last position of each user's left-padded
history; targets are ranked against the whole catalogue from the two tables in chunks, so the full
score matrix is never materialised. A TransRec stage-1 model ranks through its UEP head instead
(``SequentialRecommender.ranking_items``); its inputs are still the item vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from transrec.data.item_content import ItemContent
from transrec.data.prepared import PreparedDataset
from transrec.evaluation.protocol import stage_histories
from transrec.evaluation.ranking import ItemSets, RankingMetrics, ranks_from_embeddings
from transrec.utils.distributed import DistributedContext


@torch.no_grad()
def item_table(
    model, content: ItemContent, batch_size: int = 512, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``[n_items + 1, d]`` vectors of every item; row 0 (padding) is zeros.

    Under ``torchrun`` each process encodes its share of the chunks of ``batch_size`` items and the
    table is summed over the processes (exact: other ranks' rows are zero), see ``utils.distributed``.
    """
    ctx = DistributedContext.current()
    table = torch.zeros(content.n_items + 1, model.config.d_model, device=device)
    for start in ctx.shard(range(1, content.n_items + 1, batch_size)):
        ids = torch.arange(start, min(start + batch_size, content.n_items + 1))
        table[start : start + len(ids)] = model.encode_items(content.batch(ids).to(device)).float()
    return ctx.all_reduce_sum(table)


def left_pad(
    histories: Sequence[np.ndarray], max_len: int, reserve_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded item indices ``[B, max_len]`` of the most recent items, and the validity mask.

    With ``reserve_last`` the last slot is kept free (valid, index 0) for a mask token (BERT4Rec).
    """
    room = max_len - 1 if reserve_last else max_len
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    valid = np.zeros((len(histories), max_len), dtype=bool)
    for row, history in enumerate(histories):
        recent = np.asarray(history[-room:], dtype=np.int64) if room > 0 else np.zeros(0, np.int64)
        end = max_len - 1 if reserve_last else max_len
        out[row, end - len(recent) : end] = recent
        valid[row, end - len(recent) : end] = True
        if reserve_last:
            valid[row, -1] = True
    return torch.from_numpy(out), torch.from_numpy(valid)


@torch.no_grad()
def user_vectors(
    model,
    table: torch.Tensor,
    histories: Sequence[np.ndarray],
    users: np.ndarray,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``[B, d]`` user vectors: the user encoder's state at the last position of each history."""
    encoder = model.user_encoder
    masked_model = getattr(encoder, "masked_training", False)
    items, valid = left_pad(histories, model.config.max_len, reserve_last=masked_model)
    items, valid = items.to(device), valid.to(device)
    masked = None
    if masked_model:
        masked = torch.zeros_like(valid)
        masked[:, -1] = True
    user_ids = torch.as_tensor(users, dtype=torch.long, device=device)
    hidden = model.user_states(table[items], valid, user_ids=user_ids, masked=masked)
    return hidden[:, -1].float()


@torch.no_grad()
def evaluate_model(
    model,
    dataset: PreparedDataset,
    content: ItemContent,
    stage: str = "valid",
    ks: Sequence[int] = (5, 10, 20, 50),
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    exclude_history: bool = True,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR of ``model`` on ``stage`` ("valid" or "test") over ``users`` (default all)."""
    was_training = model.training
    model.eval()
    try:
        table = item_table(model, content, batch_size, device)
        candidates = model.ranking_items(table)  # the item vectors, or a stage-1 model's UEP head
        histories, targets = stage_histories(dataset, stage)
        users = np.arange(dataset.n_users) if users is None else np.asarray(users)
        metrics = RankingMetrics(ks, n_items=dataset.n_items, device=device)
        ctx = DistributedContext.current()
        for start in ctx.shard(range(0, len(users), batch_size)):
            batch = users[start : start + batch_size]
            batch_histories = [histories[u] for u in batch]
            vectors = model.ranking_users(user_vectors(model, table, batch_histories, batch, device))
            exclude = (
                ItemSets.from_lists([torch.from_numpy(h.astype(np.int64)) for h in batch_histories])
                if exclude_history
                else None
            )
            batch_targets = torch.from_numpy(targets[batch].astype(np.int64)).to(device)
            if exclude is not None:
                exclude = ItemSets(exclude.offsets.to(device), exclude.items.to(device))
            metrics.update(ranks_from_embeddings(vectors, candidates, batch_targets, exclude))
        ctx.all_reduce_sum(metrics.rank_counts)  # histograms of integer ranks: exact over processes
        return metrics.compute()
    finally:
        model.train(was_training)
