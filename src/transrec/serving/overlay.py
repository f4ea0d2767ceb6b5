"""The items added and removed while serving, kept beside an export in ``added/`` so that a restart has them.

    added/state.json            format, next internal id, removed catalogue indices, the added items
                                (id, text, modality, internal id) and the SHA-256 of the two files below
    added/vectors.safetensors   "vectors" float32 [m, d] of the added items, in the order of state.json
    added/content.safetensors   "text_tokens" int32 [m, T] + "text_lengths" int32 [m] and/or "images"
                                uint8 [m, S, S, 3]: the preprocessed content (``transrec export --check``
                                re-encodes it)

The whole directory is rewritten on every change through ``utils.io.atomic_directory``: a reader (or a
process killed mid-write) sees the old overlay or the new one, never a mixture. Internal ids of added
items start after the catalogue's indices and are never reused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from transrec.serving.content import PreparedItem
from transrec.serving.errors import ExportError
from transrec.utils.io import atomic_directory, recover_directory

STATE_FILE = "state.json"
VECTORS_FILE = "vectors.safetensors"
CONTENT_FILE = "content.safetensors"
OVERLAY_VERSION = 1


@dataclass(frozen=True)
class Overlay:
    """Added items (parallel lists, in internal-id order) and removed catalogue indices. Frozen: a change
    makes a new ``Overlay`` (``with_added`` / ``with_removed``), so a reader's copy never changes."""

    next_id: int
    removed: tuple[int, ...] = ()
    ids: tuple[str, ...] = ()
    internal: tuple[int, ...] = ()
    items: tuple[PreparedItem, ...] = ()
    vectors: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))

    def prepared_item(self, position: int) -> PreparedItem:
        return self.items[position]

    def with_changes(
        self,
        drop_added: set[int],
        drop_exported: set[int],
        new: list[tuple[str, PreparedItem]],
        new_vectors: torch.Tensor | None,
    ) -> Overlay:
        """This overlay without the added items of internal ids ``drop_added``, with the catalogue indices
        ``drop_exported`` removed, and ``new`` items (with their vectors) added under fresh internal ids."""
        keep = [j for j, i in enumerate(self.internal) if i not in drop_added]
        internal = [self.internal[j] for j in keep] + list(range(self.next_id, self.next_id + len(new)))
        parts = [self.vectors[keep]] if keep else []
        if new_vectors is not None and len(new):
            parts.append(new_vectors.detach().float().cpu())
        vectors = torch.cat(parts) if parts else torch.zeros(0, 0)
        return replace(
            self,
            next_id=self.next_id + len(new),
            removed=tuple(sorted(set(self.removed) | drop_exported)),
            ids=tuple([self.ids[j] for j in keep] + [item_id for item_id, _ in new]),
            internal=tuple(internal),
            items=tuple([self.items[j] for j in keep] + [item for _, item in new]),
            vectors=vectors,
        )


def read_overlay_files(directory: Path) -> dict[str, dict[str, Any]]:
    """The checksummed files of the overlay in ``directory`` (``{}`` when there is none)."""
    state = directory / STATE_FILE
    if not state.is_file():
        return {}
    return json.loads(state.read_text(encoding="utf-8"))["files"]


def read_overlay(directory: Path, bundle: Any) -> Overlay | None:
    """The overlay in ``directory`` (None when there is none), after putting back one that a killed write
    left moved aside (``recover_directory``). ``bundle`` (an ``ExportBundle``) gives the catalogue size."""
    recover_directory(directory)
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        return None
    state = json.loads(state_path.read_text(encoding="utf-8"))
    if state.get("format_version") != OVERLAY_VERSION:
        raise ExportError(
            f"{state_path}: overlay version {state.get('format_version')!r}, expected {OVERLAY_VERSION}"
        )
    rows = state["items"]
    vectors = torch.zeros(0, 0)
    items: list[PreparedItem] = []
    if rows:
        vectors = load_file(str(directory / VECTORS_FILE))["vectors"]
        content = load_file(str(directory / CONTENT_FILE))
        tokens, lengths, images = (
            content.get("text_tokens"),
            content.get("text_lengths"),
            content.get("images"),
        )
        for j, row in enumerate(rows):
            length = int(lengths[j]) if lengths is not None else 0
            has_image = row["modality"] in ("image", "both")
            items.append(
                PreparedItem(
                    row["id"],
                    row["text"],
                    tokens[j, :length].numpy() if length else None,
                    images[j].numpy() if has_image and images is not None else None,
                )
            )
        if vectors.shape[0] != len(rows):
            raise ExportError(
                f"{directory / VECTORS_FILE} holds {vectors.shape[0]} vectors for {len(rows)} items"
            )
    return Overlay(
        next_id=int(state["next_id"]),
        removed=tuple(int(i) for i in state["removed"]),
        ids=tuple(row["id"] for row in rows),
        internal=tuple(int(row["internal"]) for row in rows),
        items=tuple(items),
        vectors=vectors,
    )


def write_overlay(directory: Path, overlay: Overlay, pad_id: int = 0) -> None:
    """Replace the overlay in ``directory`` by ``overlay``, atomically (see the module)."""
    from transrec.serving.bundle import sha256_file
    from transrec.serving.content import modality_name

    with atomic_directory(directory) as tmp:
        files: dict[str, dict[str, Any]] = {}
        if overlay.ids:
            save_file({"vectors": overlay.vectors.contiguous()}, str(tmp / VECTORS_FILE))
            save_file(_content_tensors(overlay.items, pad_id), str(tmp / CONTENT_FILE))
            for name in (VECTORS_FILE, CONTENT_FILE):
                files[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
        state = {
            "format_version": OVERLAY_VERSION,
            "next_id": overlay.next_id,
            "removed": list(overlay.removed),
            "items": [
                {"id": i, "internal": n, "text": item.text, "modality": modality_name(item.modality)}
                for i, n, item in zip(overlay.ids, overlay.internal, overlay.items, strict=True)
            ],
            "files": files,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _content_tensors(items: tuple[PreparedItem, ...], pad_id: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if any(item.tokens is not None for item in items):
        width = max(len(item.tokens) for item in items if item.tokens is not None)
        tokens = np.full((len(items), width), pad_id, dtype=np.int32)
        lengths = np.zeros(len(items), dtype=np.int32)
        for j, item in enumerate(items):
            if item.tokens is not None:
                tokens[j, : len(item.tokens)] = item.tokens
                lengths[j] = len(item.tokens)
        out["text_tokens"], out["text_lengths"] = torch.from_numpy(tokens), torch.from_numpy(lengths)
    shapes = [item.image.shape for item in items if item.image is not None]
    if shapes:
        images = np.zeros((len(items), *shapes[0]), dtype=np.uint8)
        for j, item in enumerate(items):
            if item.image is not None:
                images[j] = item.image
        out["images"] = torch.from_numpy(images)
    if not out:  # safetensors needs at least one tensor; an ID model never adds items, but be total
        out["modality"] = torch.tensor([item.modality for item in items], dtype=torch.uint8)
    return out
