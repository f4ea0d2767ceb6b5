"""A prepared dataset on disk, and the reader every model, trainer and evaluator uses.

Directory format (``FORMAT_VERSION`` 1; see docs/data_format.md):

    meta.json            counts, every preparation parameter, source files with sizes and SHA-256,
                         tokenizer and image settings, side-feature vocabularies, the preparation report
    users.jsonl          one line per user index 0..n_users-1: {"index", "id"}
    items.jsonl          one line per item index 1..n_items:  {"index", "id", "text", "modality"}
    seq_offsets.npy      int64 [n_users + 1]; user u's interactions are rows offsets[u]:offsets[u+1]
    seq_items.npy        int32 [n_interactions], item indices (1..n_items), chronological per user
    seq_timestamps.npy   float64 [n_interactions]
    item_modality.npy    uint8 [n_items + 1]: bit 1 = has text, bit 2 = has image; row 0 (padding) = 0
    text_tokens.npy      int32 [n_items + 1, max_text_tokens], right-padded with the tokenizer's pad id
    text_lengths.npy     int32 [n_items + 1]; 0 where an item has no text
    images.bin + image_offsets.npy, or images.npy   (see transrec.data.image_store)
    features/item.<name>.npy, features/user.<name>.npy   int32 category indices (0 = missing);
                         [n] for single-valued features, [n, width] right-padded for multi-valued ones
    item_is_new.npy      bool [n_items + 1], only when prepared with ``new_items`` > 0: the new items
                         (``transrec.data.new_items``), which occur only as users' last items (test
                         targets); meta.json's ``new_items`` has their count, indices and test users

Leave-one-out split (implied by the sequences, never stored twice): for user u with sequence s,
training uses s[:-2], validation predicts s[-2] from s[:-2], test predicts s[-1] from s[:-1].
Every user has at least 3 interactions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from transrec.data.errors import DataError
from transrec.data.image_store import ImageStore
from transrec.data.paths import resolve_dataset
from transrec.errors import MissingPathError

FORMAT_VERSION = 1
TEXT, IMAGE = 1, 2


@dataclass(frozen=True)
class LeaveOneOut:
    """Per-user spans of the leave-one-out split, as arrays over users ``[n_users]``.

    ``starts[u]:train_ends[u]`` are the training interactions (validation history);
    ``starts[u]:train_ends[u] + 1`` the test history; targets are item indices.
    """

    starts: np.ndarray
    train_ends: np.ndarray
    valid_targets: np.ndarray
    test_targets: np.ndarray

    def history_ends(self, stage: str) -> np.ndarray:
        if stage == "valid":
            return self.train_ends
        if stage == "test":
            return self.train_ends + 1
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")

    def targets(self, stage: str) -> np.ndarray:
        if stage == "valid":
            return self.valid_targets
        if stage == "test":
            return self.test_targets
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")


class PreparedDataset:
    """Read-only view of a prepared dataset directory; arrays are memory-mapped where large."""

    def __init__(self, path: str | Path) -> None:
        self.path = resolve_dataset(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise MissingPathError(
                f"{self.path} is not a prepared dataset (no meta.json); run `transrec data prepare` first "
                "(a bare name is looked up in $TRANSREC_HOME/prepared too)"
            )
        self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(
                f"{self.path}: prepared with format version {version}, this transrec reads {FORMAT_VERSION}; "
                "prepare it again"
            )
        counts = self.meta["counts"]
        self.name: str = self.meta["name"]
        self.n_users: int = counts["users"]
        self.n_items: int = counts["items"]
        self.n_interactions: int = counts["interactions"]
        self.offsets = np.load(self.path / "seq_offsets.npy")
        self.items = np.load(self.path / "seq_items.npy", mmap_mode="r")
        self.timestamps = np.load(self.path / "seq_timestamps.npy", mmap_mode="r")
        self.item_modality = np.load(self.path / "item_modality.npy")

    @classmethod
    def open(cls, path: str | Path) -> PreparedDataset:
        return cls(path)

    def __repr__(self) -> str:
        return (
            f"PreparedDataset({self.name!r}: {self.n_users:,} users, {self.n_items:,} items, "
            f"{self.n_interactions:,} interactions)"
        )

    def sequence(self, user: int) -> np.ndarray:
        """Item indices of ``user``'s interactions, oldest first."""
        return np.asarray(self.items[self.offsets[user] : self.offsets[user + 1]])

    @cached_property
    def split(self) -> LeaveOneOut:
        starts, ends = self.offsets[:-1], self.offsets[1:]
        items = np.asarray(self.items)
        return LeaveOneOut(
            starts=starts, train_ends=ends - 2, valid_targets=items[ends - 2], test_targets=items[ends - 1]
        )

    @cached_property
    def item_ids(self) -> list[str]:
        """Original id of each item index; position 0 is the padding ("")."""
        return [""] + [row["id"] for row in self._jsonl("items.jsonl")]

    @cached_property
    def item_texts(self) -> list[str]:
        return [""] + [row["text"] for row in self._jsonl("items.jsonl")]

    @cached_property
    def user_ids(self) -> list[str]:
        return [row["id"] for row in self._jsonl("users.jsonl")]

    @property
    def has_text(self) -> np.ndarray:
        return (self.item_modality & TEXT) > 0

    @property
    def has_image(self) -> np.ndarray:
        return (self.item_modality & IMAGE) > 0

    @cached_property
    def text_tokens(self) -> np.ndarray | None:
        file = self.path / "text_tokens.npy"
        return np.load(file, mmap_mode="r") if file.is_file() else None

    @cached_property
    def text_lengths(self) -> np.ndarray | None:
        file = self.path / "text_lengths.npy"
        return np.load(file) if file.is_file() else None

    @cached_property
    def images(self) -> ImageStore | None:
        info = self.meta.get("images")
        if not info:
            return None
        return ImageStore(self.path, info["format"], info["size"])

    def feature(self, side: str, name: str) -> np.ndarray:
        """Category indices of a side feature (``side`` is "item" or "user"); 0 means missing."""
        file = self.path / "features" / f"{side}.{name}.npy"
        if not file.is_file():
            known = sorted(self.meta.get("features", {}).get(side, {}))
            raise DataError(f"no {side} feature {name!r} in {self.path}; known: {', '.join(known) or 'none'}")
        return np.load(file)

    @cached_property
    def item_is_new(self) -> np.ndarray:
        """bool ``[n_items + 1]``: items marked new by the new-item protocol (``PrepareConfig.new_items``);
        all False when the dataset was prepared without it."""
        file = self.path / "item_is_new.npy"
        if file.is_file():
            return np.load(file)
        return np.zeros(self.n_items + 1, dtype=bool)

    @property
    def report(self) -> dict[str, Any]:
        return self.meta.get("report", {})

    def _jsonl(self, name: str) -> list[dict[str, Any]]:
        with open(self.path / name, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]
