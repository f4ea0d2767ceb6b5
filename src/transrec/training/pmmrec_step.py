"""The ``pmmrec`` objective's loss of a batch: PMMRec's pre-training loss DAP + CL + NID + RCL (section
III), on the same batches as every other objective (``training.batches``).

The sequence of a user is its input window followed by its last target, so DAP (eq. 5) scores the state
at t against the item at t + 1 and the other items of the batch (by default each distinct item once,
leaving out the user's own; see ``PMMRecLossConfig.dap_negatives``). The cross-modal term (eq. 6-9) aligns
the text and image vectors of the items at the same positions. NID (eq. 10) corrupts the input window
(15% shuffled, 5% replaced by items of the batch), runs the user encoder on it and classifies each
position; RCL (eq. 11) contrasts the mean of a user's states on the clean and the corrupted window.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from transrec.config import ConfigError
from transrec.training import pmmrec_objectives as objectives
from transrec.training.config import PMMRecLossConfig

#: ``inbatch(hidden, vectors, batch)``: the softmax over the batch's distinct items at every target.
InBatchLoss = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]


def pmmrec_loss(
    model, batch: dict, config: PMMRecLossConfig, inbatch: InBatchLoss | None = None
) -> torch.Tensor:
    """The weighted sum of the four terms (a zero weight skips its term entirely).

    DAP's negatives are the batch's *distinct* items outside the user's own sequence (``inbatch``,
    ``TrainingObjective.inbatch_loss``: across processes under torchrun) when
    ``config.dap_negatives == "distinct"``, or every item slot of the other users, repeats included, as
    eq. 5 literally reads (``"slots"``)."""
    needs_modalities = config.contrastive > 0
    if needs_modalities and not hasattr(model.item_encoder, "encode"):
        raise ConfigError(
            f"the pmmrec cross-modal term needs the mm item encoder, not {model.config.item_encoder!r} "
            "(or set pmmrec.contrastive=0)"
        )
    if config.nid > 0 and model.nid_classifier is None:
        raise ConfigError("the pmmrec NID term needs model.nid_head: true (or set pmmrec.nid=0)")
    if needs_modalities:
        encoded = model.item_encoder.encode(batch["items"])
        vectors = model.with_item_features(encoded["item"], batch["items"].item_ids)
    else:
        vectors = model.encode_items(batch["items"])
    table = torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])  # row 0: padding
    rows = batch["inputs_inv"] + 1  # [B, L] rows of the table, 0 = padding
    valid = batch["valid"]
    hidden = model.user_states(table[rows], valid, batch["user_ids"])
    # The whole window: the inputs and, after them, the last target.
    last = (batch["targets_inv"][:, -1:] + 1).clamp(min=0)
    window = torch.cat([rows, last], dim=1)
    window_valid = torch.cat([valid, batch["targets"][:, -1:] != 0], dim=1)
    loss = hidden.new_zeros(())
    if config.dap > 0 and config.dap_negatives == "distinct":
        if inbatch is None:
            raise ValueError("dap_negatives='distinct' needs the in-batch loss of the training objective")
        loss = loss + config.dap * inbatch(hidden, vectors, batch)
    elif config.dap > 0:
        padded_hidden = torch.cat([hidden, hidden.new_zeros(hidden.shape[0], 1, hidden.shape[2])], dim=1)
        loss = loss + config.dap * objectives.dap_loss(padded_hidden, table[window], window_valid, window)
    if needs_modalities:
        zero = vectors.new_zeros(1, vectors.shape[1])
        text = torch.cat([zero, encoded["text_cls"]])[window]
        image = torch.cat([zero, encoded["image_cls"]])[window]
        loss = loss + config.contrastive * objectives.cross_modal_loss(
            text, image, window_valid, config.variant, config.temperature, window
        )
    if config.nid > 0 or config.rcl > 0:
        seed = int(torch.randint(0, 2**62, (1,)))  # from the per-epoch seeded global stream
        corrupted, labels = objectives.corrupt_sequences(
            rows.cpu(), valid.cpu(), torch.Generator().manual_seed(seed), config.shuffle, config.replace
        )
        corrupted_hidden = model.user_states(table[corrupted.to(rows.device)], valid, batch["user_ids"])
        if config.nid > 0:
            logits = torch.relu(model.nid_classifier(corrupted_hidden))  # eq. 10: ReLU(h W + b)
            loss = loss + config.nid * objectives.nid_loss(logits, labels.to(rows.device), valid)
        if config.rcl > 0:
            weights = valid.unsqueeze(-1).to(hidden.dtype)
            count = weights.sum(1).clamp(min=1)
            clean = (hidden * weights).sum(1) / count
            noisy = (corrupted_hidden * weights).sum(1) / count
            loss = loss + config.rcl * objectives.rcl_loss(clean, noisy)
    return loss
