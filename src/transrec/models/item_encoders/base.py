"""The item-encoder contract: distinct items' content -> vectors of the model size ``d``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from transrec.data.item_content import ItemBatch, ItemContent
from transrec.models.item_encoders.trunk_cache import CacheOptions


class ItemEncoder(nn.Module):
    """Maps an ``ItemBatch`` of ``U`` distinct items to ``[U, d]``.

    Subclasses implement ``forward(items: ItemBatch) -> Tensor[U, d]``. They never receive the padding
    index: callers reduce sequences to their unique items first (``encode_sequences``).
    ``modality_parameters`` lists the parameters of the pretrained modality encoders (text/image
    backbones), which the optimizer gives their own learning rate and weight decay; everything else
    (dense "DT" layers, ID tables) trains at the base rate.

    Class attributes:
        needs_text / needs_image: which content the data pipeline must load for this encoder.
        transferable: False for encoders tied to a catalogue's ids (the ``id`` encoder).
    """

    needs_text: bool = False
    needs_image: bool = False
    transferable: bool = True

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def modality_parameters(self) -> list[nn.Parameter]:
        return []

    # -- frozen-trunk cache (trunk_cache.py) ------------------------------------------------------------
    @property
    def has_frozen_trunk(self) -> bool:
        """Whether part of a pretrained backbone is frozen, so that its output can be cached."""
        return False

    @property
    def reads_pixels(self) -> bool:
        """Whether forward needs the images' pixels (not when a trunk cache covers the image encoder)."""
        return self.needs_image

    def build_trunk_cache(
        self,
        content: ItemContent,
        item_ids: torch.Tensor | None = None,
        *,
        batch_size: int | None = None,
        device: torch.device | str = "cpu",
        max_memory_mb: float = 4096,
        directory: str | Path | None = None,
    ) -> int:
        """Compute and keep the frozen trunk's output for ``item_ids`` (default: every item this encoder
        can receive); later forwards read it instead of running the frozen blocks. Returns the number
        of items cached (0 for an encoder without a frozen trunk). Rebuild after loading weights."""
        return self._build_trunk_cache(
            content, item_ids, CacheOptions(batch_size, device, max_memory_mb, directory)
        )

    def _build_trunk_cache(
        self, content: ItemContent, item_ids: torch.Tensor | None, options: CacheOptions
    ) -> int:
        """``build_trunk_cache``'s work: overridden by encoders with a frozen trunk or sub-encoders."""
        return 0

    def drop_trunk_cache(self) -> None:
        """Forget the caches of this encoder and of its sub-encoders; forwards run whole backbones again."""
        if hasattr(self, "trunk_store"):
            self.trunk_store = None
        for child in self.children():
            if isinstance(child, ItemEncoder):
                child.drop_trunk_cache()


def encode_sequences(encoder: ItemEncoder, items: ItemBatch, inverse: torch.Tensor) -> torch.Tensor:
    """Vectors ``[*inverse.shape, d]`` for a batch of sequences given as unique items plus an inverse map.

    ``inverse`` holds, per slot, the position of its item in ``items`` (0..U-1), or -1 for padding.
    Each distinct item is encoded once; padded slots get zero vectors and never reach the encoder.
    """
    vectors = encoder(items)
    padded = torch.cat([vectors.new_zeros(1, vectors.shape[-1]), vectors], dim=0)
    return padded[inverse + 1]


class TextAndImageEncoder(ItemEncoder):
    """An item encoder made of a ``text`` and an ``image`` encoder (``mom``, ``mm``): their backbones are
    its modality parameters, and it has a frozen trunk when either has one."""

    text: ItemEncoder
    image: ItemEncoder

    def modality_parameters(self) -> list[nn.Parameter]:
        return self.text.modality_parameters() + self.image.modality_parameters()

    @property
    def has_frozen_trunk(self) -> bool:
        return self.text.has_frozen_trunk or self.image.has_frozen_trunk

    @property
    def reads_pixels(self) -> bool:
        return self.image.reads_pixels
