"""Evaluating a trained ``SequentialRecommender`` on a prepared dataset (leave-one-out, full ranking).

Item vectors are computed once per evaluation, for every item, in chunks of distinct items (the same
``ItemBatch`` path as training); user vectors come from the last position of each user's left-padded
history; targets are ranked against the whole catalogue from the two tables in chunks, so the full
score matrix is never materialised. A TransRec stage-1 model ranks through its UEP head instead
(``SequentialRecommender.ranking_items``); its inputs are still the item vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transrec.data.item_content import ItemContent
from transrec.data.prepared import PreparedDataset
from transrec.errors import UsageError
from transrec.evaluation.protocol import absent_items, exclusion_lists, stage_histories
from transrec.evaluation.ranking import ItemSets, RankingMetrics, ranks_from_embeddings
from transrec.utils.distributed import DistributedContext
from transrec.utils.packages import import_optional


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


# MoRec Appendix A.1 / section 4.2 and NineRec: a cold item has fewer than 10 training interactions.
COLD_THRESHOLD = 10
# MoRec's warm-N keeps users with at least 5 interactions while filtering (its 5-core preparation).
WARM_MIN_USER_INTERACTIONS = 5


def parse_subset(name: str) -> int | None:
    """Check an evaluation subset name (``all``, ``cold``, ``new`` or ``warm-N`` with N >= 1); returns N
    for ``warm-N``, else None. Raises ``UsageError`` (a ValueError) naming the bad name."""
    if name in ("all", "cold", "new"):
        return None
    if name.startswith("warm-") and name[5:].isdigit() and int(name[5:]) >= 1:
        return int(name[5:])
    raise UsageError(f"unknown evaluation subset {name!r}: use all, cold, new or warm-N with N >= 1")


def subset_masks(dataset: PreparedDataset, stage: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{name: bool [n_users]}``: which users of ``stage`` belong to each named subset.

    As MoRec Appendix A.1 and section 4.2 define them (see ``evaluation.subsets`` for what is counted):

    - ``all``: every user;
    - ``cold``: the target has fewer than ``COLD_THRESHOLD`` (10) interactions among the interactions
      before the stage's target, over all users (for test: training + validation items; for valid: the
      training items), so an item first seen in a user's own history counts;
    - ``new``: the target has no such interaction at all;
    - ``warm-N``: MoRec filters the whole dataset before splitting, so the user survives the iterative
      filter (items with >= N interactions, users with >= 5) over the full sequences, test targets
      included, and the target is a surviving item.
    """
    from transrec.evaluation.subsets import cold_item_users, new_item_users, warm_item_users

    if not names:
        return {}  # every validation pass comes here: no subset, no counting
    histories, targets = stage_histories(dataset, stage)
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = np.concatenate(histories).astype(np.int64) if histories else np.zeros(0, np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    full_offsets = np.asarray(dataset.offsets, dtype=np.int64)
    full_items = np.asarray(dataset.items, dtype=np.int64)
    masks = {}
    for name in names:
        n = parse_subset(name)
        if name == "all":
            mask = torch.ones(dataset.n_users, dtype=torch.bool)
        elif name == "cold":
            mask = cold_item_users(offsets, items, targets, dataset.n_items, COLD_THRESHOLD)
        elif name == "new":
            mask = new_item_users(offsets, items, targets, dataset.n_items)
        else:
            mask = warm_item_users(
                full_offsets, full_items, targets, dataset.n_items, n, WARM_MIN_USER_INTERACTIONS
            )
        masks[name] = mask.cpu().numpy()
    return masks


@dataclass
class Evaluation:
    """One evaluation's results: ``metrics`` (what :func:`evaluate_model` returns), and per user the
    ``users`` evaluated, their ``targets`` (item indices), ``ranks`` (1 = best, as in
    ``evaluation.ranking``) and ``subsets`` (``{name: bool [len(users)]}``)."""

    metrics: dict[str, float]
    users: np.ndarray
    targets: np.ndarray
    ranks: np.ndarray
    subsets: dict[str, np.ndarray]

    def write_per_user(self, path: str | Path) -> Path:
        """Write a Parquet table, one row per user: ``user`` (index), ``target`` (item index), ``rank``
        and one boolean column per subset, for paired significance tests across runs. Needs pyarrow (the
        ``[parquet]`` extra; ``MissingPackageError`` says how to install it)."""
        pa = import_optional("pyarrow", "a per-user Parquet table")
        import pyarrow.parquet as pq

        columns = {"user": self.users.astype(np.int64), "target": self.targets.astype(np.int64),
                   "rank": self.ranks.astype(np.int64)}  # fmt: skip
        columns.update({name: mask.astype(bool) for name, mask in self.subsets.items()})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        return path


def subset_metrics(
    ranks: np.ndarray, masks: dict[str, np.ndarray], ks: Sequence[int], n_items: int
) -> dict[str, float]:
    """``{"<name>/users": count, "<name>/<metric>": value}`` for each subset: the metrics of
    :class:`RankingMetrics` over the users of the subset. A subset without users reports only its count
    (metrics over no user are undefined)."""
    out: dict[str, float] = {}
    for name, mask in masks.items():
        out[f"{name}/users"] = int(mask.sum())
        if mask.any():
            metrics = RankingMetrics(ks, n_items=n_items)
            metrics.update(torch.from_numpy(ranks[mask].astype(np.int64)))
            out.update({f"{name}/{key}": value for key, value in metrics.compute().items()})
    return out


@torch.no_grad()
def evaluate_model_detailed(
    model,
    dataset: PreparedDataset,
    content: ItemContent,
    stage: str = "valid",
    ks: Sequence[int] = (5, 10, 20, 50),
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    exclude_history: bool = True,
    users: np.ndarray | None = None,
    subsets: Sequence[str] = (),
) -> Evaluation:
    """:func:`evaluate_model` with every user's rank and subset membership kept (see :class:`Evaluation`)."""
    for name in subsets:
        parse_subset(name)  # a bad name fails before any item is encoded
    was_training = model.training
    model.eval()
    try:
        table = item_table(model, content, batch_size, device)
        candidates = model.ranking_items(table)  # the item vectors, or a stage-1 model's UEP head
        histories, targets = stage_histories(dataset, stage)
        absent = absent_items(dataset, stage)  # validation stands before the new items exist
        users = np.arange(dataset.n_users) if users is None else np.asarray(users)
        ranks = torch.zeros(len(users), dtype=torch.long, device=device)
        ctx = DistributedContext.current()
        for start in ctx.shard(range(0, len(users), batch_size)):
            batch = users[start : start + batch_size]
            batch_histories = [histories[u] for u in batch]
            vectors = model.ranking_users(user_vectors(model, table, batch_histories, batch, device))
            lists = exclusion_lists(batch_histories, exclude_history, absent)
            exclude = ItemSets.from_lists(lists) if lists is not None else None
            batch_targets = torch.from_numpy(targets[batch].astype(np.int64)).to(device)
            if exclude is not None:
                exclude = ItemSets(exclude.offsets.to(device), exclude.items.to(device))
            ranks[start : start + len(batch)] = ranks_from_embeddings(
                vectors, candidates, batch_targets, exclude
            )
        ctx.all_reduce_sum(ranks)  # integer ranks, zero where another process ranked: exact
        ranks_np = ranks.cpu().numpy()
        metrics = RankingMetrics(ks, n_items=dataset.n_items)
        metrics.update(ranks.cpu())
        result = metrics.compute()
        masks = {name: mask[users] for name, mask in subset_masks(dataset, stage, subsets).items()}
        result.update(subset_metrics(ranks_np, masks, ks, dataset.n_items))
        return Evaluation(result, users, np.asarray(targets)[users], ranks_np, masks)
    finally:
        model.train(was_training)


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
    subsets: Sequence[str] = (),
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR of ``model`` on ``stage`` ("valid" or "test") over ``users`` (default all).

    ``exclude_history=False`` keeps the user's earlier items in the ranking (RecBole's protocol). For each
    name in ``subsets`` (:func:`subset_masks`) the result also holds ``"<name>/users"`` (how many of the
    users belong to it) and ``"<name>/<metric>"`` over those users (only the count when none does).
    """
    return evaluate_model_detailed(
        model, dataset, content, stage, ks, batch_size, device, exclude_history, users, subsets
    ).metrics
