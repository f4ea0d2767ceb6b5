"""SASRec: a causal Transformer over the item vectors (Kang & McAuley 2018; the MoRec/NineRec/TransRec
default user encoder)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transrec.models.user_encoders import USER_ENCODERS
from transrec.models.user_encoders.base import UserEncoder
from transrec.models.user_encoders.transformer import TransformerConfig, TransformerStack


@dataclass
class SASRecConfig(TransformerConfig):
    """SASRec's hyper-parameters: the fields of ``TransformerConfig`` with the same defaults.

    Args:
        n_layers (`int`, defaults to 2): number of Transformer blocks.
        n_heads (`int`, defaults to 2): attention heads; must divide ``d_model``.
        dropout (`float`, defaults to 0.1): dropout on embeddings, attention weights and sub-layer outputs.
        norm_first (`bool`, defaults to True): pre-norm blocks (+ final LayerNorm) or post-norm if False.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
    """


@USER_ENCODERS.register("sasrec")
class SASRec(UserEncoder):
    """Causal self-attention: the state at position t sees the valid items at positions <= t.

    ``forward(item_vectors [B, L, d], valid [B, L] bool) -> [B, L, d]``, zero at padded positions.
    """

    config_class = SASRecConfig
    causal = True

    def __init__(self, d_model: int, max_len: int, config: SASRecConfig | None = None) -> None:
        super().__init__(d_model, max_len)
        self.config = config or SASRecConfig()
        self.stack = TransformerStack(d_model, max_len, self.config)

    def forward(
        self,
        item_vectors: torch.Tensor,
        valid: torch.Tensor,
        *,
        user_ids: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.stack(item_vectors, valid, causal=True)
