"""The papers' training step, reproduced for the speed benchmark (``TrainConfig.reference_path``).

MoRec and NineRec train a modality-based SASRec with BCE and one sampled negative per position, and they
encode every item *slot* of a batch, not every distinct item. This module does exactly that, so that
``benchmarks/bench_training.py`` measures transrec against what their public code costs. What it
follows (read, not copied):

MoRec, github.com/westlake-repl/IDvs.MoRec at ce372cf, ``bce_text/main-end2end/``:
    ``data_utils/dataset.py`` lines 24-47 (``BuildTrainDataset.__getitem__``): per user, one row of
        ``max_seq_len + 1`` slots holding the training sequence left-padded with 0, and one row of
        negatives, a uniform item outside the user's sequence at each of the ``len - 1`` positions that
        have a next item, 0 at the head padding and at the last slot; stacked as ``[L + 1, 2]`` and
        replaced by the items' token rows (``item_content[sample_items]``). ``preprocess.py`` lines
        21 and 51: the training sequence is ``s[:-2]`` of the user's last ``L + 3`` items.
    ``data_utils/preprocess.py`` line 93 and lines 113-154: every title tokenised once with
        ``max_length=num_words_title`` (30, ``parameters.py`` line 44), ``padding='max_length'``,
        ``truncation=True``; row 0 (padding) is all zeros, tokens and mask.
    ``run.py`` lines 223-237: the batch flattened to ``[B * (L + 1) * 2, 2 * 30]``, ``zero_grad()``,
        the forward under ``torch.cuda.amp.autocast()`` with a ``GradScaler``; lines 148-160: AdamW
        with the text backbone's trainable parameters in one group and the rest in another.
    ``model/model.py`` lines 30-51 (``Model.forward``): all ``B * (L + 1) * 2`` slots encoded in one
        call, viewed as ``[B, L + 1, 2, d]``; inputs are column 0 at positions ``0..L-1``, positive
        targets column 0 at ``1..L``, negatives column 1 at ``0..L-1``; the loss is
        ``BCEWithLogits`` averaged over the positives plus averaged over the negatives, both at the
        positions whose input is real (``log_mask != 0``). ``model/encoders.py`` lines 53-70 and
        73-118: the text encoder runs the backbone on the 30 tokens with their mask.
NineRec, github.com/westlake-repl/NineRec at baef644, ``Baseline/SASRec/SASRec_txt/``: the same
    layout and loss (``model/model.py`` lines 40-74, ``data_utils/dataset.py`` lines 24-47), the same
    fixed 30-token titles (``data_utils/preprocess.py`` line 117, ``parameters.py`` line 53), and a
    float32 step (``run.py`` lines 241-252: no autocast, plain AdamW).

Precision: NineRec trains in float32. MoRec's ``torch.cuda.amp.autocast()`` (float16) casts only CUDA
kernels, and its ``GradScaler`` disables itself where CUDA is absent, so their code run on a CPU trains
in float32 as well: the faithful CPU reference is ``precision: fp32``. ``precision: bf16`` is the
16-bit analogue of MoRec's GPU setting on a CPU (bfloat16 needs no loss scale); the benchmark prints
both.

Where transrec necessarily differs (none changes the cost, and none changes the loss):
    - A padded slot (item 0) is encoded like any other, at the same fixed width, as in the papers; but
      transrec's text encoder refuses an empty text, so the slot carries item 1's content instead of
      the all-zero row, and its vector is then replaced by zeros. The papers' padded vectors never
      reach their loss either: those positions are masked keys of the user encoder and carry no loss.
    - A text longer than 30 tokens keeps its first 29 tokens and its last one, as a Hugging Face
      tokenizer's truncation keeps the closing special token. Shorter texts are padded with the
      dataset's pad id and a zero mask.
    - The negatives are transrec's (``batches.SequenceTrainingData``: uniform outside the user's
      training items, the papers' rule), so the reference and transrec's own step can be given the same
      ones; the item encoder (pooling, DT layer), the user encoder and ``losses.bce_loss`` (which with
      one negative is their loss) are transrec's, so both paths train the same model.
    - The frozen bottom of the backbone runs in eval mode, as everywhere in transrec
      (``freezing.FrozenBackbone``); the papers' ``model.train()`` leaves dropout on in their frozen
      layers too, which costs them random masks over every slot's tokens. This reference is therefore,
      if anything, faster than their code, and the ratios measured against it are conservative.
"""

from __future__ import annotations

import torch

from transrec.config import ConfigError
from transrec.data.item_content import ItemBatch, ItemContent
from transrec.models.item_encoders.id import IDEncoder
from transrec.models.item_encoders.image import ImageEncoder
from transrec.models.item_encoders.text import TextEncoder
from transrec.training import losses

#: ``num_words_title`` of MoRec and NineRec: every title is padded (or cut) to this many tokens.
TITLE_TOKENS = 30
#: The item encoders whose papers' path this module reproduces (one modality, one vector per slot).
ENCODERS = (TextEncoder, ImageEncoder, IDEncoder)


def check_supported(objective: str, mode: str, n_negatives: int) -> None:
    """Refuse the settings the papers' path does not have: it is BCE, S2S, one negative per position."""
    if objective != "bce" or mode != "s2s" or n_negatives != 1:
        raise ConfigError(
            "reference_path: the reference path implements the papers' BCE objective in mode s2s with "
            f"n_negatives 1 only, not objective={objective}, mode={mode}, n_negatives={n_negatives}"
        )


def slot_layout(batch: dict) -> torch.Tensor:
    """long ``[B, L + 1, 2]``: the papers' item slots of a transrec s2s batch (0 = padding).

    Column 0 is the left-padded window of ``L + 1`` training items (``inputs`` then the last target),
    column 1 the negative of each position that has a next item, 0 elsewhere and at the last slot.
    """
    inputs, targets, negatives = batch["inputs"], batch["targets"], batch["negatives"]
    if negatives.dim() != 3 or negatives.shape[-1] != 1:
        shape = tuple(negatives.shape)
        raise ConfigError(f"reference_path needs one negative per position, got negatives {shape}")
    sequence = torch.cat([inputs, targets[:, -1:]], dim=1)
    # Where the input is padding the papers' next slot may be the first item, which carries no loss.
    if not torch.equal(torch.where(inputs != 0, sequence[:, 1:], 0), targets):
        raise ValueError("the reference path needs s2s windows, whose targets are the inputs shifted by one")
    negative = torch.cat([negatives[..., 0], negatives.new_zeros(len(negatives), 1)], dim=1)
    return torch.stack([sequence, negative], dim=-1)


def fixed_width_text(items: ItemBatch, width: int, pad_id: int) -> ItemBatch:
    """``items`` with every text padded (pad id, mask 0) or cut to exactly ``width`` tokens; a cut text
    keeps its last token (the tokenizer's closing special token), as the papers' tokenizer does."""
    ids, mask = items.input_ids, items.attention_mask
    if ids is None or mask is None:
        raise ValueError("the text reference path needs token ids: load the item content with text=True")
    lengths = mask.sum(1)
    out_ids = torch.full((len(items), width), pad_id, dtype=ids.dtype)
    out_mask = torch.zeros((len(items), width), dtype=mask.dtype)
    keep = min(ids.shape[1], width)
    out_ids[:, :keep], out_mask[:, :keep] = ids[:, :keep], mask[:, :keep]
    cut = lengths > width
    if bool(cut.any()):
        out_ids[cut, width - 1] = ids[cut, lengths[cut] - 1]
    return ItemBatch(item_ids=items.item_ids, modality=items.modality, input_ids=out_ids,
                     attention_mask=out_mask, images=items.images)  # fmt: skip


def slot_content(content: ItemContent | None, slots: torch.Tensor) -> ItemBatch:
    """The content of every slot of ``slots`` (long, 0 = padding), flattened in their order (MoRec's
    ``item_content[sample_items]``, gathered in the DataLoader worker as theirs is); texts at exactly
    ``TITLE_TOKENS`` tokens. A padded slot carries item 1's content (see the module docstring); without
    ``content`` (an ID model) only the item indices."""
    ids = slots.reshape(-1).clamp(min=1)
    if content is None:
        return ItemBatch(item_ids=ids, modality=torch.zeros(len(ids), dtype=torch.uint8))
    items = content.batch(ids)
    if items.input_ids is not None:
        items = fixed_width_text(items, TITLE_TOKENS, content.pad_id)
    return items


def reference_loss(model, batch: dict) -> torch.Tensor:
    """The papers' BCE loss of a batch built with ``CollateSequences(reference=True)`` (see the module
    docstring): all ``B x (L + 1) x 2`` slots of ``batch["slots"]`` encoded in one call from
    ``batch["slot_items"]``, texts at ``TITLE_TOKENS`` tokens, padding and repeats included."""
    encoder = model.item_encoder
    if not isinstance(encoder, ENCODERS):
        raise ConfigError(
            "reference_path: the papers' path encodes one modality per slot; it supports the text, image "
            f"and id item encoders, not {type(encoder).__name__}"
        )
    if "slot_items" not in batch:
        raise ValueError("the reference path reads batches built with make_loader(..., reference=True)")
    slots, items = batch["slots"], batch["slot_items"]
    vectors = encoder(items, fixed_width=True) if isinstance(encoder, TextEncoder) else encoder(items)
    vectors = model.with_item_features(vectors, items.item_ids)
    real = (slots.reshape(-1) != 0).unsqueeze(1)
    vectors = torch.where(real, vectors, vectors.new_zeros(()))
    vectors = vectors.view(*slots.shape, vectors.shape[-1])  # [B, L + 1, 2, d], MoRec's view
    inputs, positives, negatives = vectors[:, :-1, 0], vectors[:, 1:, 0], vectors[:, :-1, 1]
    hidden = model.user_states(inputs, batch["valid"], batch["user_ids"])
    return losses.bce_loss(hidden, positives, negatives.unsqueeze(2), batch["valid"])
