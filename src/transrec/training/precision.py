"""Mixed precision for training steps: ``fp32`` (default), ``bf16`` (CUDA, and CPUs with bf16 support)
or ``fp16`` (CUDA only, with a dynamic loss scale).

Weights and optimizer state stay in float32; autocast runs matrix products and attention (the user
encoders call ``scaled_dot_product_attention``, which picks a fused kernel where the device has one)
in the lower precision; a frozen trunk read from the trunk cache enters the trainable top in that
precision (``models.item_encoders.trunk_cache``). Evaluation always runs in float32, so that ties in the
ranking are not made by rounding.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from transrec.config import ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The autocast context and the backward/step of one training run."""

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in DTYPES:
            raise ConfigError(f"precision must be one of {', '.join(DTYPES)}, not {name!r}")
        if name == "fp16" and device.type != "cuda":
            raise ConfigError("precision fp16 needs a CUDA device; use bf16 or fp32 on a CPU")
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward_and_step(
        self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, params, grad_clip: float
    ) -> None:
        """Backward, gradient clipping (on unscaled gradients) and the optimizer step."""
        if self.scaler is None:
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
