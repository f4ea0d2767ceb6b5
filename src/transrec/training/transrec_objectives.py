"""TransRec's training objectives (Wang et al., TransRec; ``../shared/papers/000_*``), as functions.

uep_loss(states, targets, weight, bias)          # stage 1, user-encoder pre-training, eq. 8-9
cpc_loss(users, positives, valid, negatives)     # stage 2, end-to-end CPC, eq. 10
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def uep_loss(
    states: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """User-encoder pre-training, TransRec eq. 8-9: ``softmax(ReLU(S'_t W + b))`` over the catalogue,
    cross-entropy with the next item. ``states [N, d]`` last-layer states, ``targets [N]`` item indices
    (columns of ``weight [d, n_items + 1]``; column 0, the padding item, is never a target), ``bias
    [n_items + 1]``. Averaged over the N positions (the paper sums)."""
    # Column 0 (padding) is never an answer, so it is left out of the softmax; slicing rather than
    # writing -inf into it keeps ReLU's output, which its backward reads, unmodified.
    logits = F.relu(states @ weight[:, 1:] + bias[1:])
    return F.cross_entropy(logits, targets - 1)


def cpc_loss(
    users: torch.Tensor, positives: torch.Tensor, valid: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """Contrastive predictive coding, TransRec eq. 10: the user vector ``users [B, d]`` (from the first n
    items of a sequence) against its next ``l`` items ``positives [B, l, d]`` (``valid [B, l]``: which
    exist) and ``j`` sampled items ``negatives [B, j, d]`` (paper: l = 5, j = 4):
    ``-[sum_t log sigma(r_t) + sum_g log(1 - sigma(r_g))]`` per user, averaged over users (the paper
    sums), with ``r = <user, item>``."""
    positive = torch.einsum("bd,bld->bl", users, positives)
    negative = torch.einsum("bd,bjd->bj", users, negatives)
    per_user = (F.logsigmoid(positive) * valid).sum(1) + F.logsigmoid(-negative).sum(1)
    return -per_user.mean()
