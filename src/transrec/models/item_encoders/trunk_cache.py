"""The frozen-trunk cache: what a frozen backbone bottom computes for each item, computed once.

When the bottom of a text or image backbone is frozen (``freeze: top_k``, or ``all`` for two-stage
training), it computes the same function at every step: its parameters never change and it stays in
eval mode (``freezing.FrozenBackbone``). Its output per item is therefore computed once, before
training, and a training step runs only the trainable top blocks on the batch's distinct items.

Where the trunk ends:
    ``top_k``  at the input of the lowest trainable block (token states ``[T, H]`` of a text model,
               a feature map ``[C, h, w]`` of a CNN, patch states of a ViT/Swin);
    ``all``    at the backbone's output (the last token states of a text model, the pooled image
               features), so a two-stage step runs the dense head only.

Replaying is generic over the supported backbones: the frozen blocks below the boundary are swapped
for pass-through modules for the duration of one forward, and a pre-hook hands the lowest trainable
block the cached tensor instead of what reached it. Everything above the boundary runs exactly as
without the cache, so losses and gradients are those of the uncached model (to float rounding: the
trunk was evaluated in other batch shapes; ``tests/models/item_encoders/test_trunk_cache.py``). Under
autocast (``precision: bf16``) the trunk is handed over in the autocast dtype, so the trainable top's
residual stream stays in bfloat16 instead of being cast before each matrix product (an uncached bf16
run carries it in float32): the same model to bfloat16 rounding, and a faster step.

The store lives in memory (on the model's device) when it fits ``max_memory_mb``, else in a
memory-mapped file, from which each step gathers only its items.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class CacheOptions:
    """How a trunk cache is built: items per forward (None: the encoder's own default), the device,
    and where a store larger than ``max_memory_mb`` is memory-mapped."""

    batch_size: int | None = None
    device: torch.device | str = "cpu"
    max_memory_mb: float = 4096
    directory: str | Path | None = None


class TrunkStore:
    """One tensor of a fixed shape per item index ``1..n_items`` (row 0 unused), filled by ``put``.

    Args:
        n_items: catalogue size.
        shape: the per-item shape; text states are stored at the longest text's width, and a batch
            reads the leading part it needs.
        device: where an in-memory store lives (gathers then need no copy on a GPU).
        max_memory_mb: larger stores go to a memory-mapped ``directory/trunk.npy`` (float32).
        directory: where a memory-mapped store is written; required when it does not fit.
    """

    def __init__(
        self,
        n_items: int,
        shape: tuple[int, ...],
        device: torch.device | str = "cpu",
        max_memory_mb: float = 4096,
        directory: str | Path | None = None,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.device = torch.device(device)
        n_bytes = (n_items + 1) * math.prod(self.shape) * 4
        self.on_disk = n_bytes > max_memory_mb * 2**20
        if self.on_disk:
            if directory is None:
                raise ValueError(
                    f"the frozen-trunk cache needs {n_bytes / 2**20:.0f} MiB, over max_memory_mb="
                    f"{max_memory_mb}; give it a directory for a memory-mapped store"
                )
            path = Path(directory)
            path.mkdir(parents=True, exist_ok=True)
            array = np.lib.format.open_memmap(
                path / "trunk.npy", mode="w+", dtype=np.float32, shape=(n_items + 1, *self.shape)
            )
            self.values = torch.from_numpy(array)
        else:
            self.values = torch.zeros((n_items + 1, *self.shape), dtype=torch.float32, device=self.device)
        self.filled = torch.zeros(n_items + 1, dtype=torch.bool)

    @property
    def n_filled(self) -> int:
        return int(self.filled.sum())

    def put(self, item_ids: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``values [U, *s]`` for ``item_ids [U]``; ``s`` may be shorter than ``shape`` in any
        dimension (a text batch narrower than the longest text): the rest stays zero."""
        ids = item_ids.cpu()
        index = (ids, *(slice(0, n) for n in values.shape[1:]))
        self.values[index] = values.detach().to(self.values.device, torch.float32)
        self.filled[ids] = True

    def gather(self, item_ids: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """``[U, *shape]`` float32 on ``device``; refuses items that were never stored."""
        ids = item_ids.cpu()
        missing = ~self.filled[ids]
        if bool(missing.any()):
            raise KeyError(
                f"{int(missing.sum())} items are not in the frozen-trunk cache (e.g. item "
                f"{int(ids[missing][0])}); build it over every item the encoder receives"
            )
        index = ids.to(self.values.device)
        return self.values[index].to(device, non_blocking=True)


def fill_store(
    n_items: int,
    item_ids: torch.Tensor,
    compute: Callable[[torch.Tensor], torch.Tensor],
    options: CacheOptions,
    batch_size: int,
    width: int | None = None,
) -> TrunkStore | None:
    """A store holding ``compute(chunk)`` for the chunks of ``item_ids`` (None when there is no item).
    ``width`` fixes the first per-item dimension (a text's token axis, padded to the longest text)."""
    store = None
    for start in range(0, item_ids.numel(), batch_size):
        chunk = item_ids[start : start + batch_size]
        values = compute(chunk)
        if store is None:
            shape = tuple(values.shape[1:]) if width is None else (width, *values.shape[2:])
            store = TrunkStore(n_items, shape, options.device, options.max_memory_mb, options.directory)
        store.put(chunk, values)
    return store


class _Stop(Exception):
    """Raised inside the backbone's forward once the trunk's output is captured."""


class _PassThrough(nn.Module):
    """Stands in for a frozen block during a replay: returns its input in the block's output form."""

    def __init__(self, tuple_len: int | None) -> None:
        super().__init__()
        self.tuple_len = tuple_len

    def forward(self, hidden: torch.Tensor, *args, **kwargs):
        return hidden if self.tuple_len is None else (hidden,) + (None,) * (self.tuple_len - 1)


class TrunkReplay:
    """Capture and replay of the input of ``boundary`` (the lowest trainable block) of ``model``.

    Args:
        model: the backbone (its blocks named as ``freezing.find_blocks`` names them).
        frozen_blocks: the blocks below ``boundary``, bottom to top.
        boundary: the lowest trainable block.
    """

    def __init__(self, model: nn.Module, frozen_blocks: list[str], boundary: str) -> None:
        self.model, self.frozen_blocks, self.boundary = model, frozen_blocks, boundary
        self.output_forms: dict[str, int | None] | None = None

    @torch.no_grad()
    def capture(self, *args, **kwargs) -> torch.Tensor:
        """Run the backbone up to ``boundary`` and return what reaches it (nothing above runs)."""
        captured: list[torch.Tensor] = []
        forms: dict[str, int | None] = {}

        def stop(module, inputs):
            captured.append(inputs[0])
            raise _Stop

        def record(name):
            def hook(module, inputs, output):
                forms[name] = len(output) if isinstance(output, tuple) else None

            return hook

        handles = [self.model.get_submodule(self.boundary).register_forward_pre_hook(stop)]
        handles += [self.model.get_submodule(b).register_forward_hook(record(b)) for b in self.frozen_blocks]
        try:
            self.model(*args, **kwargs)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if not captured:
            raise RuntimeError(f"the forward pass never reached {self.boundary}")
        self.output_forms = forms
        return captured[0]

    @contextlib.contextmanager
    def replay(self, trunk: torch.Tensor) -> Iterator[None]:
        """Within the context, a forward of the backbone skips the frozen blocks and feeds ``trunk``
        (``[U, ...]``, shaped as what reaches ``boundary`` in an uncached forward) to ``boundary``."""
        if self.output_forms is None:
            raise RuntimeError("capture() must run before replay() (it learns the blocks' output forms)")

        def feed(module, inputs):
            dtype, device_type = inputs[0].dtype, inputs[0].device.type
            if torch.is_autocast_enabled(device_type):
                # The top computes in the autocast dtype anyway: a trunk handed over in it keeps the top's
                # residual stream there too, instead of being cast again before every matrix product.
                dtype = torch.get_autocast_dtype(device_type)
            return (trunk.to(dtype), *inputs[1:])

        swapped = []
        for name in self.frozen_blocks:
            parent_name, _, child = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            swapped.append((parent, child, parent._modules[child]))
            parent._modules[child] = _PassThrough(self.output_forms.get(name))
        handle = self.model.get_submodule(self.boundary).register_forward_pre_hook(feed)
        try:
            yield
        finally:
            handle.remove()
            for parent, child, module in swapped:
                parent._modules[child] = module
