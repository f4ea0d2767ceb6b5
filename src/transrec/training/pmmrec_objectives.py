"""PMMRec's pre-training objectives (Li et al., PMMRec; ``../shared/papers/001_*``), as functions on tensors.

Shapes: ``B`` users, ``L`` positions (left-padded), ``d`` model size; ``valid`` is bool ``[B, L]``.
The in-batch negatives ``N`` of a position of user ``u`` are the items at every valid position of the
*other* users of the batch (PMMRec section III-B), whatever their identity, as in the paper.

    dap_loss(hidden, items, valid)                          # eq. 5
    cross_modal_loss(text, image, valid, "nicl", 0.07)      # eq. 6 (vcl), 7 (icl), 8-9 (nicl)
    corrupted, labels = corrupt_sequences(items, valid, g)  # NID's corruption (section III-D1)
    nid_loss(logits, labels, valid)                         # eq. 10
    rcl_loss(pooled, pooled_corrupted)                      # eq. 11
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from transrec.config import ConfigError

UNCHANGED, SHUFFLED, REPLACED = 0, 1, 2


def _other_users(valid: torch.Tensor, item_ids: torch.Tensor | None = None, shift: int = 0) -> torch.Tensor:
    """bool ``[B*L, B*L]``: column (k, j) is a negative of row (u, l) when k != u and (k, j) is valid.

    With ``item_ids [B, L]``, a column holding the same item as position ``l + shift`` of row u is not
    a negative (another user's copy of the positive item): a correction of the literal equations,
    without which popular items are pushed away from themselves.
    """
    batch, length = valid.shape
    owner = torch.arange(batch, device=valid.device).repeat_interleave(length)
    negatives = (owner[:, None] != owner[None, :]) & valid.reshape(-1)[None, :]
    if item_ids is not None:
        flat = item_ids.reshape(-1)
        positive = torch.roll(item_ids, -shift, dims=1).reshape(-1) if shift else flat
        negatives &= positive[:, None] != flat[None, :]
    return negatives


def dap_loss(
    hidden: torch.Tensor, items: torch.Tensor, valid: torch.Tensor, item_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Dense auto-regressive prediction, PMMRec eq. 5, averaged over the valid (t, t+1) pairs.

    ``hidden [B, L, d]`` user-encoder states, ``items [B, L, d]`` the item vectors ``e^cls`` of the same
    positions. The state at t scores the item at t+1 against the items of the other users:
    ``-log exp(h_t.e_{t+1}) / (exp(h_t.e_{t+1}) + sum_N exp(h_t.e_n))``. With ``item_ids [B, L]``
    the other users' copies of the positive item are left out of N.
    """
    batch, length, d = hidden.shape
    pairs = (valid[:, :-1] & valid[:, 1:]).reshape(-1)  # t and t+1 both real
    anchors = hidden[:, :-1].reshape(-1, d)[pairs]
    positives = items[:, 1:].reshape(-1, d)[pairs]
    others = _other_users(valid, item_ids, shift=1)
    negatives_mask = others.view(batch, length, batch * length)[:, :-1].reshape(-1, batch * length)
    negative_logits = (anchors @ items.reshape(-1, d).T).masked_fill(~negatives_mask[pairs], float("-inf"))
    positive_logits = (anchors * positives).sum(-1, keepdim=True)
    logits = torch.cat([positive_logits, negative_logits], dim=1)
    return (torch.logsumexp(logits, dim=1) - positive_logits.squeeze(1)).mean()


def cross_modal_loss(
    text: torch.Tensor,
    image: torch.Tensor,
    valid: torch.Tensor,
    variant: Literal["vcl", "icl", "nicl"] = "nicl",
    temperature: float = 1.0,
    item_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-modal contrastive alignment of the text and image CLS vectors ``[B, L, d]`` of the items.

    ``delta(a, b) = exp(a.b / temperature)`` on l2-normalised vectors. For the text anchor ``t_l`` of
    user u (and symmetrically for ``v_l``):

    - ``vcl`` (eq. 6): ``-log delta(t_l, v_l) / (delta(t_l, v_l) + sum_N delta(t_l, v_n))``;
    - ``icl`` (eq. 7): the denominator also sums the intra-modality negatives ``delta(t_l, t_n)``;
    - ``nicl`` (eq. 8): the numerator adds the next item's ``delta(t_l, v_{l+1}) + delta(t_l, t_{l+1})``
      to ICL's; the denominator is ICL's, exactly as eq. 8 writes it (so the loss can be negative).

    ``vcl``/``icl`` average over every valid position, ``nicl`` over positions with a valid next item
    (eq. 9); the result is ``(L^{T,V} + L^{V,T}) / 2``. With ``item_ids [B, L]`` the other users' copies
    of the anchor's item (and, for ``nicl``, of the next item) are left out of N.
    """
    if variant not in ("vcl", "icl", "nicl"):
        raise ConfigError(f"variant must be vcl, icl or nicl, not {variant!r}")
    batch, length, d = text.shape
    t = F.normalize(text, dim=-1).reshape(-1, d)
    v = F.normalize(image, dim=-1).reshape(-1, d)
    negatives = _other_users(valid, item_ids)
    if variant == "nicl" and item_ids is not None:
        negatives &= _other_users(valid, item_ids, shift=1)
    if variant == "nicl":
        anchors = torch.cat([valid[:, :-1] & valid[:, 1:], torch.zeros_like(valid[:, :1])], dim=1).reshape(-1)
    else:
        anchors = valid.reshape(-1)
    following = torch.arange(batch * length, device=text.device) + 1  # the next position (same user)

    def one_direction(anchor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        cross = anchor @ other.T / temperature  # [BL, BL] logits of delta(anchor, other)
        intra = anchor @ anchor.T / temperature
        own = cross.diagonal()
        parts = [own[:, None], cross.masked_fill(~negatives, float("-inf"))]
        if variant != "vcl":
            parts.append(intra.masked_fill(~negatives, float("-inf")))
        denominator = torch.logsumexp(torch.cat(parts, dim=1), dim=1)
        numerator = own
        if variant == "nicl":
            nxt = following.clamp(max=batch * length - 1)
            rows = torch.arange(batch * length, device=text.device)
            numerator = torch.logsumexp(torch.stack([own, cross[rows, nxt], intra[rows, nxt]], dim=1), dim=1)
        return (denominator - numerator)[anchors].mean()

    return (one_direction(t, v) + one_direction(v, t)) / 2


def corrupt_sequences(
    items: torch.Tensor,
    valid: torch.Tensor,
    generator: torch.Generator,
    shuffle: float = 0.15,
    replace: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NID's corruption (PMMRec III-D1): in each sequence, ``shuffle`` of the valid positions exchange
    their items among themselves, and another ``replace`` of them get an item drawn from the valid
    positions of the whole batch. ``items`` holds item indices (or row indices into a batch table)
    ``[B, L]``. Returns the corrupted indices and labels ``[B, L]`` (0 unchanged, 1 shuffled, 2
    replaced; padding stays 0 and unchanged). At least two positions are shuffled in a sequence that
    has any to shuffle, so that a shuffle can move something."""
    corrupted = items.clone()
    labels = torch.zeros_like(items)
    pool = items[valid]
    for row in range(items.shape[0]):
        positions = valid[row].nonzero().squeeze(1)
        order = positions[torch.randperm(len(positions), generator=generator)]
        n_shuffle = round(shuffle * len(positions))
        n_shuffle = 0 if len(positions) < 2 else max(n_shuffle, 2 if n_shuffle else 0)
        n_replace = round(replace * len(positions))
        chosen = order[:n_shuffle]
        if n_shuffle:
            corrupted[row, chosen] = items[row, chosen[torch.randperm(n_shuffle, generator=generator)]]
            labels[row, chosen] = SHUFFLED
        swapped = order[n_shuffle : n_shuffle + n_replace]
        if n_replace:
            corrupted[row, swapped] = pool[torch.randint(len(pool), (n_replace,), generator=generator)]
            labels[row, swapped] = REPLACED
    return corrupted, labels


def nid_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Noised item detection, PMMRec eq. 10: 3-way cross-entropy of the classifier's outputs
    ``logits [B, L, 3]`` (``ReLU(h W + b)`` in the paper; its ``log(y_hat)`` read as the log of the
    softmax over them) against ``labels [B, L]``, averaged over the valid positions."""
    return F.cross_entropy(logits[valid], labels[valid])


def rcl_loss(pooled: torch.Tensor, pooled_corrupted: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Robustness-aware contrastive learning, PMMRec eq. 11: a user's pooled state ``h_u`` [B, d]
    against the pooled states of the corrupted sequences ``h~`` [B, d]; the positive is its own,
    the negatives the other users'."""
    logits = pooled @ pooled_corrupted.T / temperature
    return F.cross_entropy(logits, torch.arange(len(pooled), device=pooled.device))
