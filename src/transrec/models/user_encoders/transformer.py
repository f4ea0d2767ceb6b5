"""The Transformer shared by SASRec (causal) and BERT4Rec (bidirectional).

Written out instead of ``nn.TransformerEncoder`` so that attention is one
``scaled_dot_product_attention`` call with our own boolean mask (causality + key padding) and the module
tree is plain (``blocks.0``, ``blocks.1``...) for FSDP wrapping by ``TransformerBlock``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transrec.config import ConfigError
from transrec.models.user_encoders.base import positions_from_left


@dataclass
class TransformerConfig:
    """Hyper-parameters of a Transformer user encoder (the model size ``d`` comes from the recommender).

    Defaults follow MoRec/NineRec (2 layers, 2 heads, dropout 0.1); TransRec used 4 layers, 4 heads, d=256.

    Args:
        n_layers (`int`, defaults to 2): number of Transformer blocks.
        n_heads (`int`, defaults to 2): attention heads; must divide ``d_model``.
        dropout (`float`, defaults to 0.1): dropout on the input embeddings, attention weights, and the
            outputs of the attention and feed-forward sub-layers.
        norm_first (`bool`, defaults to True): pre-norm blocks (LayerNorm before each sub-layer, plus a
            final LayerNorm) if True; post-norm (the original Transformer/SASRec) if False.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
    """

    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.1
    norm_first: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_heads < 1:
            raise ConfigError(f"n_layers and n_heads must be >= 1, got {self.n_layers}, {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def attention_mask(valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean mask ``[B, 1, L, L]`` for SDPA, True where query t may attend to key s.

    Keys at padded positions are hidden; causal masks also hide s > t. Every query may attend to itself,
    so a padded query (which has no valid key before it) never gets an all-masked row, whose softmax
    would be NaN; its output is garbage that the caller zeroes.
    """
    length = valid.shape[1]
    allowed = valid[:, None, None, :].expand(-1, 1, length, -1)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    return allowed | torch.eye(length, dtype=torch.bool, device=valid.device)


class TransformerBlock(nn.Module):
    """Multi-head self-attention + GELU feed-forward (4d), each with a residual: ``[B, L, d] -> [B, L, d]``.

    ``forward(x, mask)`` takes the boolean ``[B, 1, L, L]`` mask of ``attention_mask``.
    """

    def __init__(self, d_model: int, config: TransformerConfig) -> None:
        super().__init__()
        if d_model % config.n_heads:
            raise ConfigError(f"d_model={d_model} is not divisible by n_heads={config.n_heads}")
        self.n_heads = config.n_heads
        self.attention_dropout = config.dropout
        self.norm_first = config.norm_first
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attention_out = nn.Linear(d_model, d_model)
        self.attention_norm = nn.LayerNorm(d_model, eps=config.layer_norm_eps)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(4 * d_model, d_model),
        )
        self.feed_forward_norm = nn.LayerNorm(d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def attend(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Self-attention of ``x [B, L, d]`` under the boolean ``mask [B, 1, L, L]``."""
        batch, length, d_model = x.shape
        # [B, L, 3d] -> 3 x [B, heads, L, d / heads]
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.attention_out(y.transpose(1, 2).reshape(batch, length, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.dropout(self.attend(self.attention_norm(x), mask))
            return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        x = self.attention_norm(x + self.dropout(self.attend(x, mask)))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))


class TransformerStack(nn.Module):
    """Position embeddings + ``n_layers`` blocks: item vectors ``[B, L, d]`` -> hidden states ``[B, L, d]``.

    Positions are counted from each sequence's first real item, so the amount of left padding changes
    nothing. Padded inputs are replaced by zeros before anything else (``torch.where``, so garbage or NaN
    there neither reaches the output nor receives gradient), and padded outputs are zero.
    """

    def __init__(self, d_model: int, max_len: int, config: TransformerConfig) -> None:
        super().__init__()
        self.max_len = max_len
        self.position_embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.input_norm = nn.LayerNorm(d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, config) for _ in range(config.n_layers))
        # Pre-norm leaves the residual stream un-normalised; post-norm blocks already end in a LayerNorm.
        self.final_norm = nn.LayerNorm(d_model, eps=config.layer_norm_eps) if config.norm_first else None

    def forward(self, item_vectors: torch.Tensor, valid: torch.Tensor, causal: bool) -> torch.Tensor:
        if item_vectors.shape[1] > self.max_len:
            raise ValueError(f"sequence length {item_vectors.shape[1]} exceeds max_len={self.max_len}")
        keep = valid.unsqueeze(-1)
        x = torch.where(keep, item_vectors, 0.0) + self.position_embedding(positions_from_left(valid))
        x = self.dropout(self.input_norm(x))
        mask = attention_mask(valid, causal)
        for block in self.blocks:
            x = block(x, mask)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return torch.where(keep, x, 0.0)
