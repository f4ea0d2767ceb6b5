"""GRU4Rec: a GRU over the item vectors (Hidasi et al. 2016), run on packed sequences so that left
padding is exactly invisible."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from transrec.config import ConfigError
from transrec.models.user_encoders import USER_ENCODERS
from transrec.models.user_encoders.base import UserEncoder


@dataclass
class GRU4RecConfig:
    """GRU4Rec's hyper-parameters.

    Args:
        hidden_size (`int | None`, defaults to None): GRU state size; None means ``d_model``.
        n_layers (`int`, defaults to 1): stacked GRU layers.
        dropout (`float`, defaults to 0.1): dropout on the GRU input and between stacked GRU layers.
        input_layer (`bool`, defaults to False): a dense layer ``d_model -> hidden_size`` before the GRU.
    """

    hidden_size: int | None = None
    n_layers: int = 1
    dropout: float = 0.1
    input_layer: bool = False

    def __post_init__(self) -> None:
        if self.n_layers < 1 or (self.hidden_size is not None and self.hidden_size < 1):
            raise ConfigError(
                f"n_layers and hidden_size must be >= 1, got {self.n_layers}, {self.hidden_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def _map_packed(fn: nn.Module, packed: PackedSequence) -> PackedSequence:
    """Apply a position-wise module to the real steps only (``packed.data`` is ``[sum(lengths), ...]``)."""
    return packed._replace(data=fn(packed.data))


@USER_ENCODERS.register("gru4rec")
class GRU4Rec(UserEncoder):
    """``forward(item_vectors [B, L, d], valid [B, L] bool) -> [B, L, d]``, zero at padded positions.

    The valid items of each row are moved to the front (keeping their order), packed with their true
    lengths, run through the GRU, projected to d and moved back. The GRU therefore starts from a zero
    state at the first real item and never sees a padded step, and all per-step layers run on the packed
    steps only, so the result does not depend on the padding at all (bit for bit).
    """

    config_class = GRU4RecConfig
    causal = True

    def __init__(self, d_model: int, max_len: int, config: GRU4RecConfig | None = None) -> None:
        super().__init__(d_model, max_len)
        self.config = config = config or GRU4RecConfig()
        hidden = config.hidden_size or d_model
        self.input_dropout = nn.Dropout(config.dropout)
        self.input_layer = nn.Linear(d_model, hidden) if config.input_layer else nn.Identity()
        self.gru = nn.GRU(
            hidden if config.input_layer else d_model,
            hidden,
            num_layers=config.n_layers,
            batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )
        self.output = nn.Linear(hidden, d_model)

    def forward(
        self,
        item_vectors: torch.Tensor,
        valid: torch.Tensor,
        *,
        user_ids: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        length = valid.shape[1]
        lengths = valid.sum(dim=1)
        # Destination of every slot: valid items to 0..n-1 in order, padded slots to n..L-1.
        front = torch.where(valid, valid.cumsum(1) - 1, lengths.unsqueeze(1) + (~valid).cumsum(1) - 1)
        index = front.unsqueeze(-1).expand_as(item_vectors)
        x = torch.zeros_like(item_vectors).scatter(
            1, index, torch.where(valid.unsqueeze(-1), item_vectors, 0.0)
        )
        # A row without items still needs one step for packing; its outputs are zeroed below.
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        packed = _map_packed(self.input_layer, _map_packed(self.input_dropout, packed))
        states, _ = self.gru(packed)
        out, _ = pad_packed_sequence(_map_packed(self.output, states), batch_first=True, total_length=length)
        out = out.gather(1, front.unsqueeze(-1).expand_as(out))
        return torch.where(valid.unsqueeze(-1), out, 0.0)
