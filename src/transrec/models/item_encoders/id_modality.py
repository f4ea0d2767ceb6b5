"""The ``id_modality`` item encoder: an item ID embedding combined with a modality encoder's vector,
MoRec's ID + modality combinations (MoRec Table 7): ``add`` (``e = e_id + e_mod``) and ``concat``
(``e = W [e_id; e_mod] + b``). Tied to its catalogue by the ID table, so it does not transfer.

    config = {"modality": "text", "modality_config": minilm_top_blocks(2), "combine": "add"}
    build_item_encoder("id_modality", 64, n_items, config)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from transrec.config import ConfigError
from transrec.data.item_content import ItemBatch, ItemContent
from transrec.models.item_encoders import ITEM_ENCODERS, build_item_encoder
from transrec.models.item_encoders.base import ItemEncoder
from transrec.models.item_encoders.id import IDEncoder, IDEncoderConfig
from transrec.models.item_encoders.trunk_cache import CacheOptions


@dataclass
class IDModalityConfig:
    """The ``id_modality`` encoder.

    Args:
        modality (`str`, defaults to "text"): the registered modality encoder (``text``, ``image``,
            ``mom``, ``mm``).
        modality_config (`dict`): that encoder's config fields.
        combine (`str`, defaults to "add"): "add" (MoRec ADD) or "concat" (MoRec CON: concatenation,
            then a dense layer to d).
        init_std (`float`, defaults to 0.02): initialisation of the ID table.
    """

    modality: str = "text"
    modality_config: dict[str, Any] = field(default_factory=dict)
    combine: Literal["add", "concat"] = "add"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.combine not in ("add", "concat"):
            raise ConfigError(f"combine must be add or concat, not {self.combine!r}")
        if self.modality in ("id", "id_modality"):
            raise ConfigError(f"modality must be a content encoder, not {self.modality!r}")


@ITEM_ENCODERS.register("id_modality")
class IDModalityEncoder(ItemEncoder):
    """``[U, d]``: the ID vector and the modality vector of each item, added or concatenated + dense."""

    config_class = IDModalityConfig
    transferable = False

    def __init__(self, d_model: int, n_items: int, config: IDModalityConfig | None = None) -> None:
        super().__init__(d_model)
        self.config = config or IDModalityConfig()
        self.ids = IDEncoder(d_model, n_items, IDEncoderConfig(self.config.init_std))
        self.content = build_item_encoder(self.config.modality, d_model, n_items, self.config.modality_config)
        self.needs_text, self.needs_image = self.content.needs_text, self.content.needs_image
        self.merge = nn.Linear(2 * d_model, d_model) if self.config.combine == "concat" else None

    def modality_parameters(self) -> list[nn.Parameter]:
        return self.content.modality_parameters()

    def forward(self, items: ItemBatch) -> torch.Tensor:
        by_id, by_content = self.ids(items), self.content(items)
        if self.merge is None:
            return by_id + by_content
        return self.merge(torch.cat([by_id, by_content], dim=-1))

    @property
    def has_frozen_trunk(self) -> bool:
        return self.content.has_frozen_trunk

    @property
    def reads_pixels(self) -> bool:
        return self.content.reads_pixels

    def _build_trunk_cache(
        self, content: ItemContent, item_ids: torch.Tensor | None, options: CacheOptions
    ) -> int:
        return self.content._build_trunk_cache(content, item_ids, options)
