"""Item encoders, one file each, one registry (``ITEM_ENCODERS``).

Each registered class carries its typed config dataclass as ``config_class``; ``build_item_encoder``
turns a plain dict (from YAML) into that config, refusing unknown keys, and builds the encoder.

    id     an embedding table (IDRec; not transferable)              id.py
    text   Hugging Face text encoder + pooling + DT layer             text.py
    image  EfficientNet-Lite0 or an HF vision model + DT layer        image.py
    mom    TransRec mixture of modality: text or image per item       mom.py
    mm     PMMRec: text and image per item, fused (merge attention)   multimodal.py
    id_modality  MoRec ADD / CON: an ID vector with a modality vector  id_modality.py

Freezing (full / top-k blocks / two-stage) and the DT head are shared by text and image: freezing.py.
Hugging Face and EfficientNet are imported only when such an encoder is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transrec.config import from_dict
from transrec.models.item_encoders.base import ItemEncoder, encode_sequences
from transrec.registry import Registry

ITEM_ENCODERS: Registry[type[ItemEncoder]] = Registry("item encoder")


def build_item_encoder(
    name: str, d_model: int, n_items: int, config: Mapping[str, Any] | None = None
) -> ItemEncoder:
    """The item encoder ``name`` producing ``[U, d_model]`` vectors; ``config`` holds its config fields.

    ``n_items`` (the catalogue size) is passed only to encoders tied to item ids (not ``transferable``).
    Raises ConfigError for unknown or wrongly typed config keys.
    """
    cls = ITEM_ENCODERS.get(name)
    typed = from_dict(cls.config_class, config, prefix=f"{name}.")
    if not cls.transferable:
        return cls(d_model, n_items, typed)
    return cls(d_model, typed)


# Imported for their @ITEM_ENCODERS.register side effect, after the registry exists. Not in __all__: a
# star import must not shadow the builtin ``id``.
from transrec.models.item_encoders import id, id_modality, image, mom, multimodal, text  # noqa: E402, F401
from transrec.models.item_encoders.image import (  # noqa: E402
    efficientnet_lite0_top_blocks,
    efficientnet_lite0_two_stage,
    tiny_vit,
)
from transrec.models.item_encoders.mom import mom_minilm_efficientnet  # noqa: E402
from transrec.models.item_encoders.text import minilm_top_blocks, minilm_two_stage, tiny_text  # noqa: E402

__all__ = [
    "ITEM_ENCODERS",
    "ItemEncoder",
    "build_item_encoder",
    "efficientnet_lite0_top_blocks",
    "efficientnet_lite0_two_stage",
    "encode_sequences",
    "minilm_top_blocks",
    "minilm_two_stage",
    "mom_minilm_efficientnet",
    "tiny_text",
    "tiny_vit",
]
