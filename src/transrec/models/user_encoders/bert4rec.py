"""BERT4Rec: a bidirectional Transformer trained by masked-item prediction (Sun et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transrec.models.user_encoders import USER_ENCODERS
from transrec.models.user_encoders.base import UserEncoder
from transrec.models.user_encoders.transformer import TransformerConfig, TransformerStack


@dataclass
class BERT4RecConfig(TransformerConfig):
    """BERT4Rec's hyper-parameters: the fields of ``TransformerConfig`` with the same defaults.

    Args:
        n_layers (`int`, defaults to 2): number of Transformer blocks.
        n_heads (`int`, defaults to 2): attention heads; must divide ``d_model``.
        dropout (`float`, defaults to 0.1): dropout on embeddings, attention weights and sub-layer outputs.
        norm_first (`bool`, defaults to True): pre-norm blocks (+ final LayerNorm) or post-norm if False.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
    """


@USER_ENCODERS.register("bert4rec")
class BERT4Rec(UserEncoder):
    """Bidirectional self-attention over the valid positions; masked items are replaced by a learned vector.

    ``forward(item_vectors [B, L, d], valid [B, L] bool, masked=[B, L] bool | None) -> [B, L, d]``, zero at
    padded positions. Every valid position (masked ones included) sees every other valid position. For
    next-item prediction the caller appends a masked slot as the last position and reads its state there.
    """

    config_class = BERT4RecConfig
    causal = False
    masked_training = True

    def __init__(self, d_model: int, max_len: int, config: BERT4RecConfig | None = None) -> None:
        super().__init__(d_model, max_len)
        self.config = config or BERT4RecConfig()
        self.mask_vector = nn.Parameter(torch.randn(d_model) * 0.02)
        self.stack = TransformerStack(d_model, max_len, self.config)

    def forward(
        self,
        item_vectors: torch.Tensor,
        valid: torch.Tensor,
        *,
        user_ids: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if masked is not None:
            # torch.where, not a product: the hidden item gets exactly zero gradient and leaks nothing.
            hide = (masked & valid).unsqueeze(-1)
            item_vectors = torch.where(hide, self.mask_vector.to(item_vectors.dtype), item_vectors)
        return self.stack(item_vectors, valid, causal=False)
