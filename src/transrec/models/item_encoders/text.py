"""The ``text`` item encoder: a Hugging Face text encoder, a pooling over its token states, then the DT
layer to ``d`` (MoRec, NineRec; TransRec eq. 4 with ``pooling: attention``).

    build_item_encoder("text", 64, n_items, minilm_top_blocks(2))      # packaged MiniLM, top 2 blocks
    build_item_encoder("text", 64, n_items, {"pretrained": "/ckpt/roberta", "freeze": "all"})   # TS
    build_item_encoder("text", 64, n_items, tiny_text())                # random tiny BERT (tests, TFS)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from transrec.config import ConfigError
from transrec.data.errors import DataError
from transrec.data.item_content import ItemBatch, ItemContent
from transrec.data.prepared import TEXT
from transrec.data.tokenize import minilm_path
from transrec.errors import MissingPathError
from transrec.models.item_encoders import ITEM_ENCODERS
from transrec.models.item_encoders.base import ItemEncoder
from transrec.models.item_encoders.freezing import (
    DenseHead,
    FreezeConfig,
    FrozenBackbone,
    drop_unused_pooler,
    probe_width,
)
from transrec.models.item_encoders.trunk_cache import CacheOptions, TrunkStore, fill_store
from transrec.utils.packages import import_optional


@dataclass
class TextEncoderConfig(FreezeConfig):
    """The ``text`` encoder; also takes the ``FreezeConfig`` fields (freeze, trainable_blocks, dnn_layers).

    Args:
        pretrained (`str | None`, defaults to "minilm"): "minilm" (the packaged all-MiniLM-L6-v2), a local
            Hugging Face checkpoint directory (read with ``local_files_only``; nothing is downloaded), or
            None to build a randomly initialised model from ``hf_config``.
        hf_config (`dict | None`, defaults to None): with ``pretrained: null``, the model's config, e.g.
            ``{"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, ...}``.
        random_init (`bool`, defaults to False): build ``pretrained``'s architecture with random weights
            (NineRec's TFS with the real architecture).
        pooling (`str`, defaults to "mean"): "cls" (the first token's state), "mean" (average of the real
            tokens) or "attention" (TransRec: one self-attention layer over the token states, then the
            average of the real tokens).
        attention_heads (`int`, defaults to 1): heads of the "attention" pooling; must divide the
            backbone's width.
        length_buckets (`int`, defaults to 8): the items of a batch are encoded in up to this many
            buckets of similar text lengths (at least 32 items each, cut where the fewest tokens are
            padded: ``length_buckets``), each padded to its own longest text (1: one padded batch).
            Same vectors, less compute on padding.
    """

    pretrained: str | None = "minilm"
    hf_config: dict[str, Any] | None = None
    random_init: bool = False
    pooling: Literal["cls", "mean", "attention"] = "mean"
    attention_heads: int = 1
    length_buckets: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.pretrained is None) == (self.hf_config is None):
            raise ConfigError("give exactly one of pretrained (a name or directory) and hf_config")
        if self.hf_config is not None and "model_type" not in self.hf_config:
            raise ConfigError("hf_config needs a model_type (e.g. bert, roberta, xlm-roberta)")
        if self.random_init and self.pretrained is None:
            raise ConfigError("random_init needs pretrained (whose architecture to build)")


def load_text_backbone(config: TextEncoderConfig) -> nn.Module:
    """The Hugging Face model (``AutoModel``) that ``config`` names, in float32, without its pooler."""
    transformers = import_optional("transformers", "the text item encoder")
    AutoConfig, AutoModel = transformers.AutoConfig, transformers.AutoModel
    if config.hf_config is not None:
        options = dict(config.hf_config)
        model = AutoModel.from_config(AutoConfig.for_model(options.pop("model_type"), **options))
    else:
        path = minilm_path() if config.pretrained == "minilm" else Path(str(config.pretrained))
        if not path.is_dir():
            raise MissingPathError(f"text checkpoint {path} is not a directory (nothing is downloaded)")
        if config.random_init:
            model = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
        else:
            # float32 master weights whatever the checkpoint's dtype; autocast picks the compute dtype.
            model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    drop_unused_pooler(model)  # every pooling here reads the token states, never the model's pooler
    return model


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of ``states [U, T, H]`` over the positions where ``mask [U, T]`` is 1 -> ``[U, H]``."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


MIN_BUCKET = 32  # items per length bucket at least: smaller matrix products waste more than padding


def length_buckets(
    lengths: torch.Tensor, max_buckets: int, min_items: int = MIN_BUCKET
) -> list[torch.Tensor]:
    """Positions into ``lengths`` (``[U]``, tokens per text) in at most ``max_buckets`` buckets of
    consecutive lengths, each of at least ``min_items`` items (one bucket when there are fewer than
    ``2 * min_items``), cut only between two different lengths; of those cuts, the one with the fewest
    padded tokens ``sum_b |b| * max(b)``. Each bucket is sorted by length, the buckets by increasing
    length.

    Dynamic programming over the distinct lengths: ``best_b[j] = min_i best_{b-1}[i] + n(i, j) * w_j``,
    with ``n(i, j)`` the items whose length is among the (i+1)-th..j-th distinct ones and ``w_j`` the
    j-th. On MovieLens titles, equal-count buckets (the former rule) pad to 1.26x the real tokens in 4
    buckets, these to 1.12x.
    """
    order = lengths.argsort(stable=True)
    count = min(max_buckets, len(order) // min_items)
    if count <= 1:
        return [order]
    values, sizes = torch.unique_consecutive(lengths[order], return_counts=True)
    ends = np.concatenate([[0], np.cumsum(sizes.numpy())])  # items of the first j distinct lengths
    items = ends[None, :] - ends[:, None]  # [i, j]: items with the (i+1)-th..j-th distinct lengths
    width = np.concatenate([[0.0], values.numpy().astype(np.float64)])  # width[j]: the j-th length
    cost = np.where(items >= min_items, items * width[None, :], np.inf)  # padded tokens of that bucket
    best = np.full(len(ends), np.inf)
    best[0] = 0.0  # best[j]: fewest padded tokens of the first j distinct lengths in b buckets
    choices, totals = [], []
    for _ in range(count):
        total = best[:, None] + cost
        choice = total.argmin(0)
        best = total[choice, np.arange(len(ends))]
        choices.append(choice)
        totals.append(best[-1])
    used = int(np.argmin(totals)) + 1  # the first minimum: the fewest buckets that pad that little
    cuts, j = [], len(ends) - 1
    for choice in reversed(choices[:used]):
        i = int(choice[j])
        cuts.append(int(ends[j] - ends[i]))
        j = i
    return list(order.split(cuts[::-1]))


class AttentionPooling(nn.Module):
    """TransRec eq. 4, ``Avg(SelfAtt(H))``: self-attention over the real tokens, then their mean."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"attention_heads={heads} does not divide the text backbone's width {width}")
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``states [U, T, H]``, ``mask [U, T]`` (1 = real token, at least one per row) -> ``[U, H]``."""
        attended, _ = self.attention(states, states, states, key_padding_mask=mask == 0, need_weights=False)
        return masked_mean(attended, mask)


@ITEM_ENCODERS.register("text")
class TextEncoder(ItemEncoder):
    """Token ids ``[U, T]`` (text required for every item) -> pooled states -> DT layer -> ``[U, d]``."""

    config_class = TextEncoderConfig
    needs_text = True

    def __init__(self, d_model: int, config: TextEncoderConfig | None = None) -> None:
        super().__init__(d_model)
        self.config = config or TextEncoderConfig()
        self.trunk_store: TrunkStore | None = None
        model = load_text_backbone(self.config)
        self.vocab_size = getattr(model.config, "vocab_size", None)
        two_tokens = torch.ones(1, 2, dtype=torch.long)
        width = probe_width(model, lambda: model(input_ids=two_tokens).last_hidden_state)
        self.backbone = FrozenBackbone(model, self.config.freeze, self.config.trainable_blocks)
        self.pooling = None
        if self.config.pooling == "attention":
            self.pooling = AttentionPooling(width, self.config.attention_heads)
        self.head = DenseHead(width, d_model, self.config.dnn_layers)

    def modality_parameters(self) -> list[nn.Parameter]:
        return self.backbone.trainable_parameters()

    def token_states(self, items: ItemBatch, fixed_width: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's last hidden states ``[U, T', H]`` and the mask ``[U, T']`` they go with.

        ``T'`` is the longest text among these items: a sub-batch (e.g. the text items of a ``mom``
        batch) does not pay for padding that only other items needed. With ``fixed_width``, ``T'`` is
        the width of ``items.input_ids`` as given (the papers' fixed-length layout; no trunk cache).
        """
        if items.input_ids is None or items.attention_mask is None:
            raise ValueError("the text encoder needs token ids: load the item content with text=True")
        ids, mask = items.input_ids, items.attention_mask
        lengths = mask.sum(1)
        # One device sync for all three checks.
        missing, width, top_id = torch.stack([(lengths == 0).sum(), lengths.max(), ids.max()]).tolist()
        if missing:
            raise DataError(
                f"{missing} of {len(items)} items have no text (all-zero attention_mask); the text encoder "
                "needs text for every item (the mom encoder routes image-only items to an image encoder)"
            )
        if self.vocab_size is not None and top_id >= self.vocab_size:
            raise DataError(
                f"token id {top_id} is outside the text backbone's vocabulary ({self.vocab_size}); the data "
                "was tokenised for another model"
            )
        if fixed_width:
            if self.trunk_store is not None:
                raise ValueError("fixed_width is the reference path's layout, which has no trunk cache")
            width = ids.shape[1]
        ids, mask = ids[:, :width], mask[:, :width]  # ItemContent pads on the right
        if self.trunk_store is not None:
            cached = self.trunk_store.gather(items.item_ids, ids.device)[:, :width]
            if self.config.freeze == "all":
                return cached, mask
            return self.backbone(input_ids=ids, attention_mask=mask, trunk=cached).last_hidden_state, mask
        return self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    @property
    def has_frozen_trunk(self) -> bool:
        return self.config.freeze in ("top_k", "all")

    @torch.no_grad()
    def _build_trunk_cache(
        self, content: ItemContent, item_ids: torch.Tensor | None, options: CacheOptions
    ) -> int:
        """Cache the token states where the trunk ends (see ``trunk_cache``) for every item with text."""
        self.trunk_store = None
        if not self.has_frozen_trunk:
            return 0
        if content.lengths is None:
            raise ValueError("the text trunk cache needs the item content with text=True")
        if item_ids is None:
            item_ids = ((content.modality & TEXT) > 0).nonzero().squeeze(1)
        item_ids = item_ids[item_ids > 0]

        def compute(chunk: torch.Tensor) -> torch.Tensor:
            batch = content.batch(chunk, pixels=False).to(options.device)
            ids, mask = batch.input_ids, batch.attention_mask
            if self.config.freeze == "all":
                return self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
            return self.backbone.trunk.capture(input_ids=ids, attention_mask=mask)

        longest = int(content.lengths[item_ids].max()) if item_ids.numel() else 1
        self.trunk_store = fill_store(
            content.n_items, item_ids, compute, options, options.batch_size or 256, longest
        )
        return 0 if self.trunk_store is None else self.trunk_store.n_filled

    def forward(self, items: ItemBatch, *, fixed_width: bool = False) -> torch.Tensor:
        """``[U, d]`` vectors for ``U`` distinct items that all have text.

        ``fixed_width``: encode every text at the full width of ``items.input_ids``, all in one batch
        (no trimming to the longest text, no length buckets): the papers' layout, in which every title
        is padded to ``num_words_title`` tokens (``training.reference``). The same vectors, more compute.
        """
        if len(items) == 0:
            return self.head.layers[0].weight.new_zeros(0, self.d_model)
        if fixed_width:
            return self.head(self.pooled(items, fixed_width=True))
        buckets = self.config.length_buckets
        if buckets <= 1 or len(items) < 2 * MIN_BUCKET or items.attention_mask is None:
            return self.head(self.pooled(items))
        # Items cut into buckets of similar lengths, each padded only to its own longest text: the
        # same vectors (each item's tokens attend only to its own), far less compute on padding.
        chunks = length_buckets(items.attention_mask.sum(1).cpu(), buckets)
        if len(chunks) == 1:
            return self.head(self.pooled(items))
        order = torch.cat(chunks).to(items.attention_mask.device)
        pooled = torch.cat([self.pooled(items.select(chunk.to(order.device))) for chunk in chunks])
        return self.head(pooled[order.argsort()])

    def pooled(self, items: ItemBatch, fixed_width: bool = False) -> torch.Tensor:
        """The pooled backbone output ``[U, H]`` (before the DT layer)."""
        states, mask = self.token_states(items, fixed_width)
        if self.config.pooling == "cls":
            return states[:, 0]
        if self.pooling is not None:
            return self.pooling(states, mask)
        return masked_mean(states, mask)


def minilm_top_blocks(k: int = 2, pooling: str = "mean") -> dict[str, Any]:
    """Packaged all-MiniLM-L6-v2 with only its top ``k`` Transformer layers fine-tuned (PMMRec/NineRec)."""
    return {"pretrained": "minilm", "pooling": pooling, "freeze": "top_k", "trainable_blocks": k}


def minilm_two_stage(dnn_layers: int = 0, pooling: str = "mean") -> dict[str, Any]:
    """Frozen MiniLM (MoRec TS; TS-DNN with ``dnn_layers > 0``)."""
    return {"pretrained": "minilm", "pooling": pooling, "freeze": "all", "dnn_layers": dnn_layers}


def tiny_text(
    vocab_size: int = 30522, hidden_size: int = 32, layers: int = 2, **fields: Any
) -> dict[str, Any]:
    """A randomly initialised tiny BERT (fast CPU runs and tests); the default vocabulary fits the ``hash``
    tokenizer's default size."""
    hf_config = {
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden_size,
        "max_position_embeddings": 128,
    }
    return {"pretrained": None, "hf_config": hf_config, **fields}
