"""Training objectives on dot-product scores: BCE with sampled negatives, in-batch and full softmax.

Each function takes already-encoded vectors (user hidden states, item vectors) and returns a scalar
mean loss; which positions carry a loss is chosen with ``loss_positions``. Shapes: B users, L positions,
k negatives per position, d model size, N selected positions, U distinct items of the batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def loss_positions(targets: torch.Tensor, mode: str) -> torch.Tensor:
    """bool ``[B, L]``: the positions that carry a loss.

    ``s2s`` and ``masked``: every position with a target (target != 0). ``s2o`` (NineRec S2O): only the
    last position, the most recent item of the window, even if the targets hold more.
    """
    has_target = targets != 0
    if mode in ("s2s", "masked"):
        return has_target
    if mode == "s2o":
        last = torch.zeros_like(has_target)
        last[:, -1] = True
        return has_target & last
    raise ValueError(f"mode must be 's2s', 's2o' or 'masked', got {mode!r}")


def bce_loss(
    hidden: torch.Tensor, pos_vecs: torch.Tensor, neg_vecs: torch.Tensor, weight_mask: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy with sampled negatives (MoRec eq. 1, SASRec form).

    Args:
        hidden: ``[B, L, d]`` user hidden states.
        pos_vecs: ``[B, L, d]`` vectors of the target items.
        neg_vecs: ``[B, L, k, d]`` vectors of the sampled negatives.
        weight_mask: ``[B, L]`` bool or float; positions with weight 0 (no target) get no loss.

    Per position, ``-log σ(h·e_pos) - mean_j log(1 - σ(h·e_neg_j))``; the result is the weighted mean
    over positions. With k = 1 this is MoRec's reference implementation: the mean positive term plus
    the mean negative term over valid positions (a loss per position as in eq. 1, averaged so the
    learning rate does not depend on sequence length or batch size).
    """
    weight = weight_mask.to(hidden.dtype)
    pos_logits = (hidden * pos_vecs).sum(-1)  # [B, L]
    neg_logits = torch.einsum("bld,blkd->blk", hidden, neg_vecs)  # [B, L, k]
    # -log σ(x) = softplus(-x) and -log(1 - σ(x)) = softplus(x), both stable for large |x|.
    per_position = F.softplus(-pos_logits)
    if neg_logits.shape[-1]:
        per_position = per_position + F.softplus(neg_logits).mean(-1)
    return (per_position * weight).sum() / weight.sum().clamp(min=1e-12)


def false_negative_rows(in_history: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """bool ``[N, U]``: the batch's ``in_history [B, U]`` repeated for each selected position.

    ``positions`` is the bool ``[B, L]`` from ``loss_positions``; rows come out in the order of
    ``hidden[positions]``, so row n belongs to the user of the n-th selected position.
    """
    users = positions.nonzero()[:, 0]
    return in_history[users]


def inbatch_softmax_loss(
    hidden: torch.Tensor,
    target_index: torch.Tensor,
    item_vecs: torch.Tensor,
    false_negative_mask: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Softmax cross-entropy over the batch's distinct items (PMMRec eq. 5, DAP).

    Args:
        hidden: ``[N, d]`` hidden states at the selected positions.
        target_index: long ``[N]``, position of each target in ``item_vecs`` (the batch's
            ``targets_inv`` at those positions).
        item_vecs: ``[U, d]`` vectors of the batch's unique items.
        false_negative_mask: bool ``[N, U]``, True = leave this item out of the denominator (the other
            items of the same user, PMMRec's N excludes "the interacted items of the current user").
            The target itself is never left out, whatever the mask says.
        log_q: ``[U]`` log sampling probability of each item, or None. Subtracting it from the logits
            (logQ correction) undoes the bias of in-batch negatives towards popular items.
        temperature: logits are ``h·e / temperature`` before the logQ correction.

    Returns the mean over the N positions.
    """
    logits = hidden @ item_vecs.T / temperature  # [N, U]
    if log_q is not None:
        logits = logits - log_q[None, :]
    if false_negative_mask is not None:
        is_target = F.one_hot(target_index, num_classes=item_vecs.shape[0]).bool()
        logits = logits.masked_fill(false_negative_mask & ~is_target, float("-inf"))
    return F.cross_entropy(logits, target_index)


def log_q_from_counts(counts: torch.Tensor | np.ndarray, items: torch.Tensor) -> torch.Tensor:
    """log of each item's share of the training interactions: ``[U]`` for ``items`` (long ``[U]``).

    ``counts`` is ``[n_items + 1]`` (``transrec.training.batches.training_item_counts``). An item drawn
    into a batch in proportion to its popularity has sampling probability count / total; items never
    seen in training count as 1 so that their correction stays finite.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1.0)
    counts[0] = 0.0  # padding is never sampled
    log_share = torch.log(counts) - torch.log(counts.sum())
    return log_share[items.cpu()].float().to(items.device)


def full_softmax_loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    all_item_vecs: torch.Tensor,
    unavailable: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy over the whole catalogue (TransRec stage 1, eq. 8-9).

    TransRec scores the catalogue with a projection ``W^U``; its rows (or the item encoder's vectors of
    every item) are ``all_item_vecs``.

    Args:
        hidden: ``[N, d]`` hidden states at the selected positions.
        targets: long ``[N]`` item indices in 1..n_items.
        all_item_vecs: ``[n_items + 1, d]``; row 0 (padding) is not a class: it never enters the
            normaliser, whatever its vector.
        unavailable: optional bool ``[n_items + 1]``: items left out of the normaliser (the new-item
            protocol's items, which do not exist yet at training time); never a target.

    Returns the mean over the N positions.
    """
    if targets.numel() and int(targets.min()) < 1:
        raise ValueError("targets must be item indices >= 1; 0 is padding")
    logits = hidden @ all_item_vecs[1:].T  # [N, n_items]; class c is item c + 1
    if unavailable is not None:
        logits = logits.masked_fill(unavailable[1:].to(logits.device), float("-inf"))
    return F.cross_entropy(logits, targets - 1)
