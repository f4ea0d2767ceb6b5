"""One training step's loss: encode the batch's distinct items once, run the user encoder, apply the
objective of the run (BCE with sampled negatives, in-batch softmax, or full softmax; PMMRec's and
TransRec's objectives live in ``pmmrec_step`` and ``transrec_step``)."""

from __future__ import annotations

import torch

from transrec.data.item_content import ItemContent
from transrec.data.prepared import PreparedDataset
from transrec.training import losses, reference
from transrec.training.batches import batch_to, training_item_counts
from transrec.training.config import TrainConfig
from transrec.training.pmmrec_step import pmmrec_loss
from transrec.training.transrec_step import cpc_step_loss, uep_step_loss
from transrec.utils.distributed import DistributedContext, gather_rows


class TrainingObjective:
    """Computes the loss of a batch (as built by ``training.batches.CollateSequences``) for a model."""

    def __init__(
        self, config: TrainConfig, dataset: PreparedDataset, content: ItemContent, device: torch.device
    ):
        self.config, self.content, self.device = config, content, device
        self.counts = None
        if config.reference_path:
            reference.check_supported(config.objective, config.mode, config.n_negatives)
        if config.objective in ("inbatch", "pmmrec") and config.logq:
            self.counts = torch.from_numpy(training_item_counts(dataset))
        # Items of the new-item protocol do not exist yet at training time: no class of the full softmax.
        new = torch.from_numpy(dataset.item_is_new)
        self.unavailable = new if bool(new.any()) else None

    def loss(self, model, batch: dict) -> torch.Tensor:
        batch = batch_to(batch, self.device, non_blocking=True)
        if self.config.objective == "pmmrec":
            return pmmrec_loss(model, batch, self.config.pmmrec, self.inbatch_loss)
        if self.config.reference_path:
            return reference.reference_loss(model, batch)
        if self.config.objective == "uep":
            return uep_step_loss(model, batch)
        if self.config.objective == "cpc":
            return cpc_step_loss(model, batch)
        vectors = model.encode_items(batch["items"])  # [U, d], each distinct item once
        table = torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])  # row 0: padding
        masked = batch["masked"] if self.config.mode == "masked" else None
        hidden = model.user_states(table[batch["inputs_inv"] + 1], batch["valid"], batch["user_ids"], masked)
        targets = batch["targets"]
        at = targets != 0
        objective = self.config.objective
        if objective == "bce":
            return losses.bce_loss(
                hidden, table[batch["targets_inv"] + 1], table[batch["negatives_inv"] + 1], at
            )
        if objective == "inbatch":
            return self.inbatch_loss(hidden, vectors, batch)
        all_items = torch.arange(1, self.content.n_items + 1)
        catalogue = model.encode_items(self.content.batch(all_items).to(self.device))
        catalogue = torch.cat([catalogue.new_zeros(1, catalogue.shape[1]), catalogue])
        return losses.full_softmax_loss(hidden[at], targets[at], catalogue, self.unavailable)

    def inbatch_loss(
        self, hidden: torch.Tensor, vectors: torch.Tensor, batch: dict, temperature: float | None = None
    ) -> torch.Tensor:
        """Softmax over the batch's distinct items (every process's, under torchrun) at each position
        with a target; the items of the user's own training sequence are not negatives."""
        temperature = self.config.temperature if temperature is None else temperature
        targets = batch["targets"]
        at = targets != 0
        rows = at.nonzero(as_tuple=True)[0]
        if DistributedContext.current().world_size > 1:
            return self._inbatch_across_processes(hidden[at], vectors, batch, rows, targets[at], temperature)
        log_q = None if self.counts is None else losses.log_q_from_counts(self.counts, batch["unique_items"])
        return losses.inbatch_softmax_loss(
            hidden[at], batch["targets_inv"][at], vectors, batch["in_history"][rows], log_q, temperature
        )

    def _inbatch_across_processes(
        self, hidden, vectors, batch, rows, target_ids, temperature
    ) -> torch.Tensor:
        """In-batch softmax whose negatives are the distinct items of every process's batch, each once:
        the same loss as one process's on the union of the batches (``tests/training/
        test_distributed_step.py``). An item in several processes' batches is gathered once per
        process; all its copies but the first, the target's copies other than the target's own column,
        and every item of the user's history are masked as false negatives."""
        context = DistributedContext.current()
        all_vectors, offset = gather_rows(vectors, context)
        all_ids, _ = gather_rows(batch["unique_items"].to(vectors.device), context)
        false_negatives = history_membership(batch["histories"], all_ids)[rows]
        false_negatives |= all_ids[None, :] == target_ids[:, None]
        order = all_ids.argsort(stable=True)
        repeated = torch.zeros_like(all_ids, dtype=torch.bool)  # a copy after the item's first
        repeated[order[1:]] = all_ids[order[1:]] == all_ids[order[:-1]]
        false_negatives |= repeated[None, :]
        log_q = None if self.counts is None else losses.log_q_from_counts(self.counts, all_ids)
        return losses.inbatch_softmax_loss(
            hidden, batch["targets_inv"][batch["targets"] != 0] + offset, all_vectors, false_negatives, log_q,
            temperature,
        )  # fmt: skip


def history_membership(histories: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """bool ``[B, G]``: whether ``items[g]`` is in row b of ``histories`` (``[B, H]``, 0 = padding),
    by one sorted search over (row, item) keys."""
    stride = max(int(histories.max()), int(items.max()) if items.numel() else 0) + 1
    row = torch.arange(histories.shape[0], device=histories.device)[:, None]
    keys = (row * stride + histories).flatten().sort().values
    queries = row * stride + items[None, :].to(histories.device)
    found = torch.searchsorted(keys, queries).clamp(max=keys.numel() - 1)
    return keys[found] == queries
