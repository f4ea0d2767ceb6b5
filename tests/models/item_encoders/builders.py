"""Tiny configs and item batches for the item-encoder tests (random weights, 32x32 images)."""

from __future__ import annotations

import torch

from transrec.data.item_content import ItemBatch
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import IMAGE, TEXT, PreparedDataset
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.item_encoders import tiny_text, tiny_vit

VOCAB = 100
D = 16


def tiny_source(directory) -> PreparedDataset:
    """The tiny synthetic source (text-only, image-only and two-modality items), 32 px raw images."""
    world = make_world(SyntheticWorldConfig.tiny(seed=1))
    config = PrepareConfig(user_k=3, item_k=3, image_size=32, image_format="raw", hash_vocab_size=VOCAB,
                           max_text_tokens=12)  # fmt: skip
    return prepare(world.source, config, directory, progress=False)


def text_config(**fields) -> dict:
    return tiny_text(vocab_size=VOCAB, **fields)


def vit_config(**fields) -> dict:
    return tiny_vit(image_size=32, **fields)


HF_VISION = {
    "vit": {"model_type": "vit", "image_size": 32, "patch_size": 8, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "swin": {"model_type": "swin", "image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 2],
             "num_heads": [1, 2], "window_size": 4},
    "resnet": {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
               "layer_type": "basic"},
    "clip": {"model_type": "clip_vision_model", "image_size": 32, "patch_size": 8, "hidden_size": 32,
             "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
}  # fmt: skip


def items(
    lengths: list[int] | None = None, n_images: int = 0, image_flags: list[bool] | None = None, seed: int = 0
) -> ItemBatch:
    """``ItemBatch`` of ``U`` items: item u has ``lengths[u]`` real tokens (0 = no text), right-padded, and an
    image where ``image_flags[u]`` (all items when only ``n_images`` is given)."""
    generator = torch.Generator().manual_seed(seed)
    count = len(lengths) if lengths is not None else n_images
    lengths = lengths if lengths is not None else [0] * count
    image_flags = image_flags if image_flags is not None else [n_images > 0] * count
    width = max(max(lengths), 1)
    ids = torch.randint(1, VOCAB, (count, width), generator=generator)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    modality = torch.tensor(
        [(TEXT if n else 0) | (IMAGE if has else 0) for n, has in zip(lengths, image_flags)],
        dtype=torch.uint8,
    )
    images = torch.randint(0, 256, (count, 32, 32, 3), generator=generator, dtype=torch.uint8)
    images[~torch.tensor(image_flags, dtype=torch.bool)] = 0
    return ItemBatch(
        item_ids=torch.arange(1, count + 1),
        modality=modality,
        input_ids=ids * mask,
        attention_mask=mask,
        images=images,
    )
