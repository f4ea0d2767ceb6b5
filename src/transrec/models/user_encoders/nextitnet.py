"""NextItNet: stacked dilated causal 1-D convolutions with residual connections (Yuan et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transrec.config import ConfigError
from transrec.models.user_encoders import USER_ENCODERS
from transrec.models.user_encoders.base import UserEncoder


@dataclass
class NextItNetConfig:
    """NextItNet's hyper-parameters.

    Args:
        dilations (`tuple[int, ...]`, defaults to (1, 4)): one residual block per entry; a block's two
            convolutions use dilation ``r`` and ``2r`` (as in the paper's code), so (1, 4) gives 1, 2, 4, 8.
        n_repeats (`int`, defaults to 2): how many times the ``dilations`` stack is repeated.
        kernel_size (`int`, defaults to 3): width of every convolution.
        dropout (`float`, defaults to 0.1): dropout on the input item vectors.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
    """

    dilations: tuple[int, ...] = (1, 4)
    n_repeats: int = 2
    kernel_size: int = 3
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if not self.dilations or min(self.dilations) < 1 or self.n_repeats < 1 or self.kernel_size < 1:
            raise ConfigError("dilations must be non-empty and positive; n_repeats, kernel_size >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


class ResidualBlock(nn.Module):
    """x + ReLU(LN(conv_2r(ReLU(LN(conv_r(x)))))) on ``[B, L, d]``; both convolutions are causal.

    Each convolution's input is zeroed at padded positions (``keep [B, L, 1]`` False): the LayerNorm bias
    makes padded states non-zero after every layer, and a causal convolution would carry them into the
    first real items otherwise.
    """

    def __init__(self, d_model: int, dilation: int, config: NextItNetConfig) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(d_model, d_model, config.kernel_size, dilation=dilation * factor) for factor in (1, 2)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d_model, eps=config.layer_norm_eps) for _ in (1, 2))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = torch.where(keep, h, 0.0).transpose(1, 2)  # [B, d, L] for Conv1d
            # Left-only zero padding makes position t see t, t - r, t - 2r...: causal, length-preserving.
            h = conv(F.pad(h, ((conv.kernel_size[0] - 1) * conv.dilation[0], 0)))
            h = F.relu(norm(h.transpose(1, 2)))
        return x + h


@USER_ENCODERS.register("nextitnet")
class NextItNet(UserEncoder):
    """``forward(item_vectors [B, L, d], valid [B, L] bool) -> [B, L, d]``, zero at padded positions.

    Zeroed padding looks exactly like the convolutions' own left zero padding, so the amount of left
    padding does not matter.
    """

    config_class = NextItNetConfig
    causal = True

    def __init__(self, d_model: int, max_len: int, config: NextItNetConfig | None = None) -> None:
        super().__init__(d_model, max_len)
        self.config = config = config or NextItNetConfig()
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            ResidualBlock(d_model, dilation, config)
            for _ in range(config.n_repeats)
            for dilation in config.dilations
        )

    def forward(
        self,
        item_vectors: torch.Tensor,
        valid: torch.Tensor,
        *,
        user_ids: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        keep = valid.unsqueeze(-1)
        x = self.dropout(torch.where(keep, item_vectors, 0.0))
        for block in self.blocks:
            x = block(x, keep)
        return torch.where(keep, x, 0.0)
