"""What the text and image encoders share: how much of a pretrained backbone trains, and the dense layers
that map its features to the model size ``d`` (MoRec's "DT layer"; TS-DNN's extra MLP layers).

Freeze modes (``FreezeConfig.freeze``):
    ``none``   full fine-tuning (E2E).
    ``top_k``  only the top ``trainable_blocks`` blocks of the backbone and everything above them train
               (MoRec/NineRec/PMMRec "top-2 blocks"); the embeddings and lower blocks are frozen.
    ``all``    two-stage (TS): the backbone is fixed and runs under ``torch.no_grad``; only the dense head
               trains. TS-DNN is ``all`` with ``dnn_layers > 0``.

Frozen parts stay in eval mode whatever ``.train()`` says, so dropout and BatchNorm statistics of a
frozen block never change: a frozen block computes the same function at every step.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from transrec.config import ConfigError
from transrec.models.item_encoders.trunk_cache import TrunkReplay

FreezeMode = Literal["none", "top_k", "all"]


@dataclass
class FreezeConfig:
    """Freezing and head fields, shared by the ``text`` and ``image`` encoder configs.

    Args:
        freeze (`str`, defaults to "none"): "none" (full fine-tuning), "top_k" (the top
            ``trainable_blocks`` blocks and everything above them train) or "all" (two-stage: frozen
            backbone, only the dense head trains).
        trainable_blocks (`int | None`, defaults to None): the k of "top_k"; required by it, refused
            otherwise (so a forgotten ``freeze: top_k`` never passes silently).
        dnn_layers (`int`, defaults to 0): extra ``GELU -> Linear(d, d)`` layers after the DT layer
            (MoRec's TS-DNN uses them on a frozen backbone; allowed with every mode).
    """

    freeze: FreezeMode = "none"
    trainable_blocks: int | None = None
    dnn_layers: int = 0

    def __post_init__(self) -> None:
        if self.freeze == "top_k":
            if self.trainable_blocks is None or self.trainable_blocks < 1:
                raise ConfigError(f"freeze=top_k needs trainable_blocks >= 1, got {self.trainable_blocks}")
        elif self.trainable_blocks is not None:
            raise ConfigError(f"trainable_blocks is only read with freeze=top_k, not freeze={self.freeze}")
        if self.dnn_layers < 0:
            raise ConfigError(f"dnn_layers must be >= 0, got {self.dnn_layers}")


def find_blocks(model: nn.Module) -> list[str]:
    """Names of the backbone's repeated blocks, bottom to top.

    Generic rule: the elements of every innermost ``nn.ModuleList`` whose children share one class with
    parameters, in registration order. This gives ``encoder.layer.i`` (BERT, RoBERTa, XLM-R, MiniLM),
    ``layers.i`` (ViT), ``encoder.layers.i`` (CLIP), ``encoder.layers.s.blocks.i`` (Swin: every block of
    every stage), ``encoder.stages.s`` (ResNet: a stage, since its residual layers sit in an
    ``nn.Sequential``) and ``_blocks.i`` (EfficientNet's MBConv blocks).
    """
    lists = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and len({type(child) for child in module}) == 1
        and any(True for _ in module[0].parameters())
    ]
    innermost = [name for name in lists if not any(other.startswith(f"{name}.") for other in lists)]
    return [f"{name}.{i}" for name in innermost for i in range(len(model.get_submodule(name)))]


class FrozenBackbone(nn.Module):
    """A backbone with a freeze mode applied: ``forward`` is the wrapped model's forward.

    ``model`` is kept as the attribute ``model`` (checkpoint keys ``...backbone.model.*``). Under
    "top_k" the frozen bottom needs no ``no_grad``: none of its inputs or parameters require grad, so
    autograd records nothing there and keeps none of its activations.
    """

    def __init__(self, model: nn.Module, freeze: FreezeMode = "none", trainable_blocks: int | None = None):
        super().__init__()
        self.model = model
        self.freeze = freeze
        self.trunk: TrunkReplay | None = None  # capture/replay of the frozen bottom (top_k only)
        if freeze == "all":
            model.requires_grad_(False)
        elif freeze == "top_k":
            blocks = _freeze_below_top_blocks(model, trainable_blocks or 0)
            k = trainable_blocks or 0
            self.trunk = TrunkReplay(model, blocks[:-k], blocks[-k])
        self.frozen_modules = fully_frozen_modules(model, "")
        self.train(self.training)

    def forward(self, *args: Any, trunk: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """The wrapped model's forward; with ``trunk`` (``top_k`` only), the cached input of the lowest
        trainable block for these items, the frozen blocks are skipped (``trunk_cache``)."""
        if trunk is not None:
            if self.trunk is None:
                raise ValueError(f"a cached trunk replays a top_k backbone only, not freeze={self.freeze}")
            with self.trunk.replay(trunk):
                return self.model(*args, **kwargs)
        context = torch.no_grad() if self.freeze == "all" else contextlib.nullcontext()
        with context:
            return self.model(*args, **kwargs)

    def swap_model(self, model: nn.Module) -> nn.Module:
        """Put ``model`` in place of the wrapped model: a stand-in with the same forward, for inference
        (``serving.onnx_backbone`` swaps in an ONNX Runtime session). The trunk replay and the list of
        frozen submodules address the old model's blocks, so they go with it (``train``/``eval`` then
        touch only ``model``'s own submodules, and a cached trunk is refused). Returns the old model."""
        old, self.model = self.model, model
        self.trunk, self.frozen_modules = None, fully_frozen_modules(model, "")
        return old

    def train(self, mode: bool = True) -> FrozenBackbone:
        super().train(mode)
        for name in self.frozen_modules:
            self.model.get_submodule(name).eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def _freeze_below_top_blocks(model: nn.Module, k: int) -> list[str]:
    blocks = find_blocks(model)
    if not blocks:
        raise ConfigError(f"found no block list in {type(model).__name__}; use freeze=none or freeze=all")
    if k > len(blocks):
        raise ConfigError(f"trainable_blocks={k} but {type(model).__name__} has only {len(blocks)} blocks")
    # "Everything above" = every parameter registered after the lowest trainable block's first one; the
    # supported backbones register modules in the order they run (embeddings, blocks, final norm, pooler).
    lowest = blocks[-k] + "."
    above = False
    for name, param in model.named_parameters():
        above = above or name.startswith(lowest)
        param.requires_grad_(above)
    return blocks


def fully_frozen_modules(module: nn.Module, prefix: str) -> list[str]:
    """The largest submodules (by name) whose parameters are all frozen; "" is the module itself."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [prefix]
    frozen = []
    for name, child in module.named_children():
        frozen += fully_frozen_modules(child, f"{prefix}.{name}" if prefix else name)
    return frozen


class DenseHead(nn.Module):
    """Backbone features ``[U, F]`` -> ``[U, d]``: ``Linear(F, d)`` then ``dnn_layers`` x ``GELU ->
    Linear(d, d)``; the part of a modality encoder that trains at the base learning rate."""

    def __init__(self, in_features: int, d_model: int, dnn_layers: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_features, d_model)]
        for _ in range(dnn_layers):
            layers += [nn.GELU(), nn.Linear(d_model, d_model)]
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


@torch.no_grad()
def probe_width(module: nn.Module, run: Callable[[], torch.Tensor]) -> int:
    """Width of the last dimension of ``run()``'s output, computed once in eval mode (no stats change)."""
    was_training = module.training
    module.eval()
    try:
        return int(run().shape[-1])
    finally:
        module.train(was_training)


def drop_unused_pooler(model: nn.Module) -> None:
    """Remove a Hugging Face model's pooler head when its output is not used.

    Only for classes that support running without one (an ``add_pooling_layer`` argument, e.g. BERT,
    RoBERTa, ViT): they check ``self.pooler is None``. An unused trainable head would get no gradient,
    which distributed training treats as an error, and would waste its optimizer state.
    """
    if isinstance(getattr(model, "pooler", None), nn.Module) and (
        "add_pooling_layer" in inspect.signature(type(model).__init__).parameters
    ):
        model.pooler = None
