"""The DNN / "DSSM-variant" user encoder of NineRec: the mean of the items so far, then an MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transrec.config import ConfigError
from transrec.models.user_encoders import USER_ENCODERS
from transrec.models.user_encoders.base import UserEncoder


def make_mlp(d_model: int, n_layers: int, dropout: float) -> nn.Module:
    """``n_layers`` of (dropout, Linear d -> d) with GELU between them, none after the last one (the output
    is dot-producted with item vectors, so it must be free to take any sign). 0 layers: identity."""
    layers: list[nn.Module] = []
    for i in range(n_layers):
        if i:
            layers.append(nn.GELU())
        layers += [nn.Dropout(dropout), nn.Linear(d_model, d_model)]
    return nn.Sequential(*layers) if layers else nn.Identity()


@dataclass
class MeanPoolConfig:
    """Hyper-parameters of the mean-pool DNN user encoder.

    Args:
        n_layers (`int`, defaults to 2): Linear layers of the MLP after pooling (0 = the plain mean).
        dropout (`float`, defaults to 0.1): dropout before every Linear layer.
    """

    n_layers: int = 2
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.n_layers < 0:
            raise ConfigError(f"n_layers must be >= 0, got {self.n_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@USER_ENCODERS.register("mean_pool")
class MeanPool(UserEncoder):
    """State at t = MLP(mean of the valid item vectors at positions <= t); causal, order-free.

    ``forward(item_vectors [B, L, d], valid [B, L] bool) -> [B, L, d]``, zero at padded positions.
    """

    config_class = MeanPoolConfig
    causal = True

    def __init__(self, d_model: int, max_len: int, config: MeanPoolConfig | None = None) -> None:
        super().__init__(d_model, max_len)
        self.config = config or MeanPoolConfig()
        self.mlp = make_mlp(d_model, self.config.n_layers, self.config.dropout)

    def forward(
        self,
        item_vectors: torch.Tensor,
        valid: torch.Tensor,
        *,
        user_ids: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        keep = valid.unsqueeze(-1)
        # Left padding contributes exact zeros to the running sum, so the mean ignores it bit for bit.
        total = torch.where(keep, item_vectors, 0.0).cumsum(dim=1)
        count = valid.cumsum(dim=1).clamp(min=1).unsqueeze(-1).to(total.dtype)
        return torch.where(keep, self.mlp(total / count), 0.0)
