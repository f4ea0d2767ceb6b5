"""The losses of a batch for TransRec's two training stages (Wang et al., TransRec, section 3.3), on the
batches of ``training.batches`` (each distinct item encoded once, then gathered by the inverse maps).

Stage 1, ``uep`` (eq. 8-9): the user encoder predicts the next item at every position with a target
(s2s; s2o: the last one) through ``model.uep_head``, a softmax over the whole catalogue. The run
freezes the modality encoders (``TrainConfig.frozen``), so it trains the user encoder, the head and the
DT layers between the frozen backbones and the user encoder: those layers map the backbones' features
into the user encoder's input space, and leaving them at their random initialisation would pre-train
the user encoder on a random projection that stage 2 then moves.

Stage 2, ``cpc`` (eq. 10): ``cpc`` windows (``SequenceTrainingData`` mode ``cpc``): the user vector is
the user encoder's last state over the first n items, scored against the next l items (positives)
and j sampled items (negatives); every encoder trains end to end.
"""

from __future__ import annotations

import torch

from transrec.config import ConfigError
from transrec.training.transrec_objectives import cpc_loss, uep_loss


def _item_rows(model, batch: dict) -> torch.Tensor:
    """``[U + 1, d]``: the batch's distinct item vectors after a zero row (padding, index -1 + 1)."""
    vectors = model.encode_items(batch["items"])
    return torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])


def uep_step_loss(model, batch: dict) -> torch.Tensor:
    """TransRec eq. 8-9 on an s2s/s2o batch, averaged over the positions with a target."""
    if model.uep_head is None:
        raise ConfigError("the uep objective needs model.uep_head: true (TransRec eq. 8's W^U, b^U)")
    table = _item_rows(model, batch)
    hidden = model.user_states(table[batch["inputs_inv"] + 1], batch["valid"], batch["user_ids"])
    at = batch["targets"] != 0
    head = model.uep_head
    return uep_loss(hidden[at], batch["targets"][at], head.weight.T, head.bias)


def cpc_step_loss(model, batch: dict) -> torch.Tensor:
    """TransRec eq. 10 on a cpc batch (``positives [B, l]``, ``negatives [B, j]``), averaged over users."""
    if "positives" not in batch:
        raise ValueError("the cpc objective needs cpc windows (SequenceTrainingData mode='cpc')")
    table = _item_rows(model, batch)
    hidden = model.user_states(table[batch["inputs_inv"] + 1], batch["valid"], batch["user_ids"])
    users = hidden[:, -1]  # inputs are left-padded: the last position holds the n-th item's state
    positives = table[batch["positives_inv"] + 1]
    negatives = table[batch["negatives_inv"] + 1]
    return cpc_loss(users, positives, batch["positives"] != 0, negatives)
