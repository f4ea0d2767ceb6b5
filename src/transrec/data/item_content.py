"""Item content as model inputs: the tokens and images of a set of distinct items, ready for encoders.

Every training step and every evaluation pass encodes *distinct* items only: the batch's sequences are
reduced to their unique item indices (padding 0 excluded) and the content of those items is gathered
here, in the DataLoader worker, once per item. Item encoders never see the padding index.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from transrec.data.errors import DataError
from transrec.data.prepared import IMAGE, TEXT, PreparedDataset


@dataclass
class ItemBatch:
    """Content of ``U`` distinct items (never the padding index 0).

    Attributes:
        item_ids: long ``[U]``, item indices in 1..n_items.
        modality: uint8 ``[U]``, bit 1 = has text, bit 2 = has image.
        input_ids: long ``[U, T]`` token ids (T = longest text among these items), or None.
        attention_mask: long ``[U, T]``, 1 on real tokens, or None. All zeros for an item without text.
        images: uint8 ``[U, H, W, 3]`` (RGB, unnormalised; each image encoder normalises its own way),
            or None. All zeros for an item without an image.
    """

    item_ids: torch.Tensor
    modality: torch.Tensor
    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    images: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.item_ids.numel()

    @property
    def has_text(self) -> torch.Tensor:
        return (self.modality & TEXT) > 0

    @property
    def has_image(self) -> torch.Tensor:
        return (self.modality & IMAGE) > 0

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ItemBatch:
        moved = {
            f.name: None
            if getattr(self, f.name) is None
            else getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
        }
        return ItemBatch(**moved)

    def select(self, index: torch.Tensor) -> ItemBatch:
        """The items at ``index`` (a bool mask or integer positions into this batch)."""
        picked = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
            for f in fields(self)
        }
        return replace(self, **picked)

    def pin_memory(self) -> ItemBatch:
        pinned = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name).pin_memory()
            for f in fields(self)
        }
        return ItemBatch(**pinned)


class ItemContent:
    """Gathers ``ItemBatch``es from a prepared dataset.

    ``text`` / ``image`` choose which modalities are loaded (an ID model loads neither). Token tables are
    small and held in memory; images are read from the dataset's lazily opened store, so an
    ``ItemContent`` can be sent to DataLoader workers.
    """

    def __init__(
        self, dataset: PreparedDataset, text: bool = True, image: bool = True, pixels: bool = True
    ) -> None:
        self.n_items = dataset.n_items
        self.modality = torch.from_numpy(np.asarray(dataset.item_modality, dtype=np.uint8))
        self.tokens = self.lengths = None
        if text:
            if dataset.text_tokens is None:
                raise DataError(f"{dataset.path} has no text tokens (prepared with tokenizer=none)")
            self.tokens = torch.from_numpy(np.asarray(dataset.text_tokens, dtype=np.int64))
            self.lengths = torch.from_numpy(np.asarray(dataset.text_lengths, dtype=np.int64))
            self.pad_id = int(dataset.meta["tokenizer"]["pad_id"])
        self.store = None
        if image:
            if dataset.images is None:
                raise DataError(f"{dataset.path} has no images")
            self.store = dataset.images
        self.load_text, self.load_image, self.load_pixels = text, image, pixels

    def batch(self, item_ids: torch.Tensor | np.ndarray, pixels: bool = True) -> ItemBatch:
        """Content of ``item_ids`` (long ``[U]``, each in 1..n_items). Without ``pixels`` (here or in the
        constructor) items keep their image flag but ``images`` is None: for image encoders whose frozen
        trunk is cached (``models.item_encoders.trunk_cache``), which never read pixels."""
        ids = torch.as_tensor(item_ids, dtype=torch.long)
        if ids.numel() and (int(ids.min()) < 1 or int(ids.max()) > self.n_items):
            raise ValueError(f"item indices must be in 1..{self.n_items}; 0 is padding and is never encoded")
        modality = self.modality[ids]
        if not self.load_text:
            modality = modality & ~torch.tensor(TEXT, dtype=torch.uint8)
        if not self.load_image:
            modality = modality & ~torch.tensor(IMAGE, dtype=torch.uint8)
        out = ItemBatch(item_ids=ids, modality=modality)
        if self.tokens is not None:
            width = max(int(self.lengths[ids].max()) if ids.numel() else 1, 1)
            out.input_ids = self.tokens[ids, :width]
            out.attention_mask = (torch.arange(width)[None, :] < self.lengths[ids][:, None]).long()
        if self.store is not None and pixels and self.load_pixels:
            out.images = torch.from_numpy(self.store.batch(ids.tolist()))
        return out
