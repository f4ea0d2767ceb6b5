"""Small in-memory raw datasets for preparation tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from transrec.data.schema import BytesImage, RawDataset, RawInteractions, RawItems


def png(colour: tuple[int, int, int], size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def raw_dataset(
    interactions: list[tuple[str, str, float]],
    items: dict[str, tuple[str, bytes | None]] | None,
    name: str = "toy",
) -> RawDataset:
    """``interactions`` as (user, item, time) in file order; ``items`` maps id -> (text, image bytes)."""
    users, item_ids, times = zip(*interactions)
    raw_items = None
    if items is not None:
        raw_items = RawItems(
            ids=list(items),
            texts=[text for text, _ in items.values()],
            images=[
                BytesImage(img, f"img {k}") if img is not None else None for k, (_, img) in items.items()
            ],
        )
    return RawDataset(
        name=name,
        interactions=RawInteractions(np.array(users, object), np.array(item_ids, object), np.array(times)),
        items=raw_items,
    )
