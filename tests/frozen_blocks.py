"""Counting the work of the frozen blocks of pretrained backbones, for the tests of the frozen-trunk cache.

A cache that is never built, or built and never read, trains the same model as the cache (that is its
promise), so equal metrics cannot tell whether it ran; only counting what the frozen blocks compute can.
A block replayed from the cache is swapped for a pass-through (``trunk_cache.TrunkReplay``), so the
forward hooks registered here fire only when the real frozen block runs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transrec.models.item_encoders.freezing import FrozenBackbone, find_blocks


class FrozenBlockCounter:
    """Rows (items) and calls that passed through every frozen block of the watched backbones.

    Blocks are named ``"<backbone class>:<block name>"``, e.g. ``"BertModel:encoder.layer.0"``; a block
    is frozen when none of its parameters requires a gradient (the bottom of ``top_k``, all of ``all``).
    """

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.backbones: dict[str, list[str]] = {}  # backbone class -> its frozen blocks' names
        self.snapshots: list[tuple[str, dict[str, int]]] = []  # (event, rows) at each ``hook`` call

    def reset(self) -> None:
        """Zero the counts (the watched blocks stay watched)."""
        self.rows = dict.fromkeys(self.rows, 0)
        self.calls = dict.fromkeys(self.calls, 0)

    def hook(self, event: str, info: dict) -> None:
        """A ``train`` hook: keeps the rows per block at each step and epoch event."""
        self.snapshots.append((event, dict(self.rows)))

    def watch(self, module: nn.Module) -> FrozenBlockCounter:
        """Count every frozen block of every ``FrozenBackbone`` inside ``module``."""
        for child in module.modules():
            if isinstance(child, FrozenBackbone):
                self.watch_backbone(child)
        return self

    def watch_backbone(self, backbone: FrozenBackbone) -> None:
        label = type(backbone.model).__name__
        if label in self.backbones:
            raise ValueError(f"two watched backbones are both {label}: their counts would mix")
        frozen = [
            name
            for name in find_blocks(backbone.model)
            if not any(p.requires_grad for p in backbone.model.get_submodule(name).parameters())
        ]
        if not frozen:  # freeze: none, or a top_k that trains every block
            return
        self.backbones[label] = [f"{label}:{name}" for name in frozen]
        for name, key in zip(frozen, self.backbones[label], strict=True):
            self.rows[key] = self.calls[key] = 0
            backbone.model.get_submodule(name).register_forward_hook(self._counter(key))

    def _counter(self, key: str):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            assert isinstance(hidden, torch.Tensor), f"{key} returned {type(hidden).__name__}"
            self.rows[key] += int(hidden.shape[0])
            self.calls[key] += 1

        return hook

    def watch_new_backbones(self, monkeypatch: pytest.MonkeyPatch) -> FrozenBlockCounter:
        """Also watch every ``FrozenBackbone`` built from now on (those ``train`` builds inside itself),
        until ``monkeypatch`` is undone."""
        original = FrozenBackbone.__init__

        def init(backbone, *args, **kwargs):
            original(backbone, *args, **kwargs)
            self.watch_backbone(backbone)

        monkeypatch.setattr(FrozenBackbone, "__init__", init)
        return self

    def backbone_rows(self) -> dict[str, int]:
        """Rows per backbone; all frozen blocks of one backbone see the same items, which is checked."""
        out = {}
        for label, keys in self.backbones.items():
            counts = {self.rows[key] for key in keys}
            assert len(counts) == 1, f"the frozen blocks of {label} saw different rows: {counts}"
            out[label] = counts.pop()
        return out
