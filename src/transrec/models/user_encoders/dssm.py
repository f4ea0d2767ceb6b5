"""DSSM's user tower: a user-ID embedding (+ MLP). Not transferable; the MoRec/NineRec baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transrec.config import ConfigError
from transrec.models.user_encoders import USER_ENCODERS
from transrec.models.user_encoders.base import UserEncoder
from transrec.models.user_encoders.mean_pool import make_mlp


@dataclass
class DSSMConfig:
    """Hyper-parameters of the DSSM user-ID tower.

    Args:
        n_layers (`int`, defaults to 0): Linear layers of the MLP on the user embedding (MoRec found 0,
            the bare embedding, best).
        dropout (`float`, defaults to 0.1): dropout before every Linear layer.
    """

    n_layers: int = 0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.n_layers < 0:
            raise ConfigError(f"n_layers must be >= 0, got {self.n_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@USER_ENCODERS.register("dssm")
class DSSM(UserEncoder):
    """``forward(item_vectors [B, L, d], valid [B, L] bool, user_ids=[B] long) -> [B, L, d]``.

    The user's vector is broadcast to every valid position (padded ones are zero); the item sequence is
    ignored, so nothing here transfers to a new set of users.
    """

    config_class = DSSMConfig
    causal = True
    uses_user_ids = True

    def __init__(
        self, d_model: int, max_len: int, config: DSSMConfig | None = None, *, n_users: int | None = None
    ) -> None:
        super().__init__(d_model, max_len)
        if n_users is None or n_users < 1:
            raise ValueError(
                f"the dssm user encoder has a user-ID tower and needs n_users >= 1, got {n_users}"
            )
        self.config = config or DSSMConfig()
        self.user_embedding = nn.Embedding(n_users, d_model)
        self.mlp = make_mlp(d_model, self.config.n_layers, self.config.dropout)

    def forward(
        self,
        item_vectors: torch.Tensor,
        valid: torch.Tensor,
        *,
        user_ids: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if user_ids is None:
            raise ValueError("the dssm user encoder reads user ids: call it with user_ids=[B] long")
        user = self.mlp(self.user_embedding(user_ids)).to(item_vectors.dtype)  # [B, d]
        return torch.where(valid.unsqueeze(-1), user.unsqueeze(1), 0.0)
