"""The user-encoder contract: a batch of item-vector sequences -> hidden states per position."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class UserEncoder(nn.Module):
    """Maps item vectors ``[B, L, d]`` with a validity mask ``[B, L]`` to hidden states ``[B, L, d]``.

    Sequences are LEFT-padded: the most recent item sits at position ``L - 1``; ``valid[b, t]`` is True
    on real items. The output at valid positions must not depend on anything at padded positions
    (neither their vectors nor how many there are). ``causal`` encoders (SASRec, GRU4Rec, NextItNet,
    the causal mean-pool DNN) make position t depend on positions <= t only, so every position can be
    trained to predict the next item (S2S); bidirectional ones (BERT4Rec) are trained by masked-item
    prediction. The user representation for ranking is the hidden state at the last position.

    Subclasses implement ``forward(item_vectors, valid, *, user_ids=None, masked=None) -> [B, L, d]``;
    the keyword arguments beyond the contract:
        user_ids: long ``[B]`` user indices (only the DSSM user-ID tower reads them).
        masked: bool ``[B, L]`` positions whose item is hidden behind a learned mask vector (BERT4Rec).
    """

    #: The typed config dataclass of the encoder (``build_user_encoder`` builds it from a dict).
    config_class: ClassVar[type]
    causal: ClassVar[bool] = True
    uses_user_ids: ClassVar[bool] = False
    masked_training: ClassVar[bool] = False

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len


def positions_from_left(valid: torch.Tensor) -> torch.Tensor:
    """Position ids counted from each sequence's first real item: ``[B, L]`` long, 0 on padding.

    Counting from the first real item (not from the left edge) makes position embeddings independent of
    how much padding precedes a sequence.
    """
    return (valid.long().cumsum(dim=1) - 1).clamp(min=0) * valid.long()
