"""The ``mm`` item encoder: text and image encoders both applied to every item, then fused (PMMRec).

    build_item_encoder("mm", 64, n_items, {"text": tiny_text(), "image": tiny_vit(pooling="cls")})

Fusions (``fusion``):
    ``merge_attention``  PMMRec eq. 3: token states of the text and patch states of the image, each
                         projected to d, a learned ``mm_cls`` in front, modality-type embeddings added,
                         one Transformer layer over ``[mm_cls; text tokens; image patches]`` (padding
                         tokens masked); the ``mm_cls`` output is the item vector.
    ``sum``              the text and image item vectors (each encoder's own DT layer) added.
    ``concat``           the two vectors concatenated, then a dense layer to d (MoRec++-style).

``encode`` also returns each modality's vector in d (``text_cls``, ``image_cls``: the text pooled by its
encoder's pooling, ``cls`` being PMMRec's ``t^cls``; the image's first token, or a CNN's mean), which
the cross-modal objectives of PMMRec align (``training.pmmrec_objectives``); ``sum`` and ``concat``
fuse these two.

Frozen-trunk cache (``trunk_cache``): each side whose backbone has a frozen part (``freeze: top_k`` or
``all``) caches it through its own encoder, over the items that have both modalities. The text side
caches as the ``text`` encoder does (its ``all`` boundary, the last token states, is what the fusion
reads); the image side's ``all`` boundary moves from the pooled features to the token states
(``ImageEncoder.cache_tokens``), since merge attention reads the patches or feature-map cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from transrec.config import ConfigError
from transrec.data.errors import DataError
from transrec.data.item_content import ItemBatch, ItemContent
from transrec.data.prepared import IMAGE, TEXT
from transrec.models.item_encoders import ITEM_ENCODERS
from transrec.models.item_encoders.base import TextAndImageEncoder
from transrec.models.item_encoders.image import ImageEncoder, ImageEncoderConfig
from transrec.models.item_encoders.text import TextEncoder, TextEncoderConfig, masked_mean
from transrec.models.item_encoders.trunk_cache import CacheOptions

TEXT_TYPE, IMAGE_TYPE, CLS_TYPE = 0, 1, 2


@dataclass
class MultimodalEncoderConfig:
    """The ``mm`` encoder.

    Args:
        text (`TextEncoderConfig`): the text encoder (default: the packaged MiniLM).
        image (`ImageEncoderConfig`): the image encoder; ``pooling`` must be ``cls`` or ``mean`` (the
            image CLS vector is its first token, or the mean of a CNN's map).
        fusion (`str`, defaults to "merge_attention"): "merge_attention", "sum" or "concat".
        fusion_heads (`int`, defaults to 2): attention heads of the fusion layer; must divide d.
        fusion_dropout (`float`, defaults to 0.1): dropout inside the fusion layer.
    """

    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=lambda: ImageEncoderConfig(pooling="mean"))
    fusion: Literal["merge_attention", "sum", "concat"] = "merge_attention"
    fusion_heads: int = 2
    fusion_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.fusion not in ("merge_attention", "sum", "concat"):
            raise ConfigError(f"fusion must be merge_attention, sum or concat, not {self.fusion!r}")
        if self.image.pooling == "pooler":
            raise ConfigError("the mm encoder reads the image tokens: use image pooling cls or mean")


@ITEM_ENCODERS.register("mm")
class MultimodalEncoder(TextAndImageEncoder):
    """Every item through both encoders, fused -> ``[U, d]``; items must have text and an image."""

    config_class = MultimodalEncoderConfig
    needs_text = True
    needs_image = True

    def __init__(self, d_model: int, config: MultimodalEncoderConfig | None = None) -> None:
        super().__init__(d_model)
        self.config = config or MultimodalEncoderConfig()
        self.text = TextEncoder(d_model, self.config.text)
        self.image = ImageEncoder(d_model, self.config.image)
        self.image.cache_tokens = True  # encode reads the image tokens, never the pooled features
        if self.config.fusion == "merge_attention":
            if d_model % self.config.fusion_heads:
                raise ConfigError(
                    f"fusion_heads={self.config.fusion_heads} does not divide d_model={d_model}"
                )
            self.text_proj = nn.Linear(self.text.head.layers[0].in_features, d_model)
            self.image_proj = nn.Linear(self.image.head.layers[0].in_features, d_model)
            self.mm_cls = nn.Parameter(torch.randn(d_model) * 0.02)
            self.type_embedding = nn.Embedding(3, d_model)
            self.fuse = nn.TransformerEncoderLayer(
                d_model, self.config.fusion_heads, 4 * d_model, self.config.fusion_dropout,
                batch_first=True, norm_first=True,
            )  # fmt: skip
        elif self.config.fusion == "concat":
            self.merge = nn.Linear(2 * d_model, d_model)

    def _build_trunk_cache(
        self, content: ItemContent, item_ids: torch.Tensor | None, options: CacheOptions
    ) -> int:
        """Cache each side's frozen trunk over the items with both modalities (the only ones ``encode``
        accepts); returns the number of items with a cached trunk."""
        ids = torch.arange(1, content.n_items + 1) if item_ids is None else item_ids[item_ids > 0]
        both = TEXT | IMAGE
        ids = ids[(content.modality[ids] & both) == both]
        counts = []
        for encoder, part in ((self.text, "text"), (self.image, "image")):
            where = None if options.directory is None else Path(options.directory) / part
            counts.append(encoder._build_trunk_cache(content, ids, replace(options, directory=where)))
        return max(counts)

    def forward(self, items: ItemBatch) -> torch.Tensor:
        return self.encode(items)["item"]

    def encode(self, items: ItemBatch) -> dict[str, torch.Tensor]:
        """``[U, d]`` each: ``item`` (the fused vector), ``text_cls`` and ``image_cls`` (per modality)."""
        missing = int((~(items.has_text & items.has_image)).sum())
        if missing:
            raise DataError(
                f"{missing} of {len(items)} items lack text or an image; the mm encoder needs both "
                "(use the mom encoder for items with one modality)"
            )
        text_states, text_mask = self.text.token_states(items)
        image_states = self.image.tokens(items)
        text_pooled = self._pool_text(text_states, text_mask)
        image_pooled = image_states.mean(1) if self.image.config.pooling == "mean" else image_states[:, 0]
        out = {"text_cls": self.text.head(text_pooled), "image_cls": self.image.head(image_pooled)}
        fusion = self.config.fusion
        if fusion == "sum":
            out["item"] = out["text_cls"] + out["image_cls"]
        elif fusion == "concat":
            out["item"] = self.merge(torch.cat([out["text_cls"], out["image_cls"]], dim=-1))
        else:
            out["item"] = self._merge_attention(text_states, text_mask, image_states)
        return out

    def _pool_text(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The text encoder's own pooling (``cls`` gives PMMRec's ``t^cls``)."""
        if self.text.config.pooling == "cls":
            return states[:, 0]
        if self.text.pooling is not None:
            return self.text.pooling(states, mask)
        return masked_mean(states, mask)

    def _merge_attention(self, text: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        count, device = text.shape[0], text.device
        types = self.type_embedding.weight
        sequence = torch.cat([
            (self.mm_cls + types[CLS_TYPE]).expand(count, 1, -1),
            self.text_proj(text) + types[TEXT_TYPE],
            self.image_proj(image) + types[IMAGE_TYPE],
        ], dim=1)  # fmt: skip
        keep = torch.cat([torch.ones(count, 1, dtype=torch.bool, device=device), mask.bool(),
                          torch.ones(image.shape[:2], dtype=torch.bool, device=device)], dim=1)  # fmt: skip
        return self.fuse(sequence, src_key_padding_mask=~keep)[:, 0]


def pmmrec_tiny(vocab_size: int = 30522, **fields: Any) -> dict[str, Any]:
    """A tiny random ``mm`` config (BERT with CLS pooling + ViT on 32 px) for tests and CPU smoke runs."""
    from transrec.models.item_encoders.image import tiny_vit
    from transrec.models.item_encoders.text import tiny_text

    return {
        "text": tiny_text(vocab_size=vocab_size, pooling="cls"),
        "image": tiny_vit(pooling="cls"),
        **fields,
    }
