"""The ``mom`` item encoder (TransRec's mixture of modality): each item goes through the encoder of the
modality it has, and both encoders map into the same ``d``-space.

Only the sub-batches are encoded: the text encoder sees exactly the items routed to text, the image
encoder exactly those routed to image; nothing is padded and no forward pass is wasted.

    build_item_encoder("mom", 64, n_items, mom_minilm_efficientnet(k=2))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from transrec.data.errors import DataError
from transrec.data.item_content import ItemBatch, ItemContent
from transrec.models.item_encoders import ITEM_ENCODERS
from transrec.models.item_encoders.base import TextAndImageEncoder
from transrec.models.item_encoders.image import (
    ImageEncoder,
    ImageEncoderConfig,
    efficientnet_lite0_top_blocks,
)
from transrec.models.item_encoders.text import TextEncoder, TextEncoderConfig, minilm_top_blocks
from transrec.models.item_encoders.trunk_cache import CacheOptions


@dataclass
class MoMEncoderConfig:
    """The ``mom`` encoder.

    Args:
        text (`TextEncoderConfig`, defaults to the packaged MiniLM, fully fine-tuned): the text encoder.
        image (`ImageEncoderConfig`, defaults to EfficientNet-Lite0, fully fine-tuned): the image encoder.
        prefer (`str`, defaults to "text"): what an item with both modalities goes through: "text",
            "image", or "sum" (both encoders, vectors added). Items with neither are refused.
    """

    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    prefer: Literal["text", "image", "sum"] = "text"


@ITEM_ENCODERS.register("mom")
class MoMEncoder(TextAndImageEncoder):
    """Routes each item to ``self.text`` or ``self.image`` (or both under ``prefer: sum``) -> ``[U, d]``."""

    config_class = MoMEncoderConfig
    needs_text = True
    needs_image = True

    def __init__(self, d_model: int, config: MoMEncoderConfig | None = None) -> None:
        super().__init__(d_model)
        self.config = config or MoMEncoderConfig()
        self.text = TextEncoder(d_model, self.config.text)
        self.image = ImageEncoder(d_model, self.config.image)

    def _build_trunk_cache(
        self, content: ItemContent, item_ids: torch.Tensor | None, options: CacheOptions
    ) -> int:
        """Cache each sub-encoder's trunk over exactly the items routed to it."""
        ids = torch.arange(1, content.n_items + 1) if item_ids is None else item_ids[item_ids > 0]
        routed = self.routes(ItemBatch(item_ids=ids, modality=content.modality[ids]))
        total = 0
        for rows, encoder, part in zip(routed, (self.text, self.image), ("text", "image"), strict=True):
            where = None if options.directory is None else Path(options.directory) / part
            total += encoder._build_trunk_cache(content, ids[rows], replace(options, directory=where))
        return total

    def routes(self, items: ItemBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Bool ``[U]`` masks of the items the text and the image encoder receive."""
        has_text, has_image = items.has_text, items.has_image
        neither = int((~(has_text | has_image)).sum())
        if neither:
            raise DataError(f"{neither} of {len(items)} items have neither text nor an image")
        text_rows = has_text & ~has_image if self.config.prefer == "image" else has_text
        image_rows = has_image & ~has_text if self.config.prefer == "text" else has_image
        return text_rows, image_rows

    def forward(self, items: ItemBatch) -> torch.Tensor:
        """``[U, d]``: row i is its item's text vector, image vector, or (``sum``) both added."""
        parts = []
        for rows, encoder in zip(self.routes(items), (self.text, self.image)):
            index = rows.nonzero().squeeze(1)
            if index.numel():  # an empty sub-batch costs no forward pass at all
                parts.append((index, encoder(items.select(index))))
        if not parts:
            return self.text.head.layers[0].weight.new_zeros(0, self.d_model)
        out = parts[0][1].new_zeros(len(items), self.d_model)
        for index, vectors in parts:
            out = out.index_add(0, index, vectors.to(out.dtype))
        return out


def mom_minilm_efficientnet(k: int = 2, prefer: str = "text") -> dict[str, Any]:
    """TransRec-style MoM with the packaged encoders: MiniLM and EfficientNet-Lite0, top ``k`` blocks each."""
    return {"text": minilm_top_blocks(k), "image": efficientnet_lite0_top_blocks(k), "prefer": prefer}
