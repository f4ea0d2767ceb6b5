"""The ``id`` item encoder: one learned vector per catalogue item (the IDRec baseline; not transferable)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transrec.config import ConfigError
from transrec.data.item_content import ItemBatch
from transrec.models.item_encoders import ITEM_ENCODERS
from transrec.models.item_encoders.base import ItemEncoder


@dataclass
class IDEncoderConfig:
    """The ``id`` encoder.

    Args:
        init_std (`float`, defaults to 0.02): standard deviation of the normal initialisation of the
            table (the usual SASRec/RecBole choice); the padding row 0 stays zero.
    """

    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.init_std <= 0:
            raise ConfigError(f"init_std must be positive, got {self.init_std}")


@ITEM_ENCODERS.register("id")
class IDEncoder(ItemEncoder):
    """``nn.Embedding(n_items + 1, d, padding_idx=0)`` looked up by ``items.item_ids`` -> ``[U, d]``.

    Needs no content; tied to its catalogue's item indices, so it never transfers to another dataset.
    """

    config_class = IDEncoderConfig
    transferable = False

    def __init__(self, d_model: int, n_items: int, config: IDEncoderConfig | None = None) -> None:
        super().__init__(d_model)
        self.config = config or IDEncoderConfig()
        self.n_items = n_items
        self.embedding = nn.Embedding(n_items + 1, d_model, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=self.config.init_std)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, items: ItemBatch) -> torch.Tensor:
        """``[U, d]`` vectors of the items ``items.item_ids`` (each in 1..n_items)."""
        ids = items.item_ids
        if ids.numel():
            low, high = torch.stack([ids.min(), ids.max()]).tolist()
            # An out-of-range index would be a device-side assert on GPU; padding (0) would silently read
            # the zero row, hiding a caller that forgot to drop it.
            if low < 1 or high > self.n_items:
                raise ValueError(
                    f"item indices must be in 1..{self.n_items}, got {low}..{high} (0 is padding and is "
                    "never encoded)"
                )
        return self.embedding(ids)
