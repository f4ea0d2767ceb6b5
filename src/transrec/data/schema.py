"""The raw data model every loader produces and preparation consumes.

A raw dataset is a catalogue of items and a log of interactions, both keyed by the source's own string
ids. An item carries text, an image, both, or one of them (mixture of modality), plus optional side
features; an interaction is (user, item, timestamp). Rows are kept in file order: the position of an
interaction in the log is its *file order*, which the default tie rule uses (see ``prepare``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from transrec.data.report import PreparationReport

#: A side feature value: one category, several (a genre list), or None when absent.
FeatureValue = str | list[str] | None


class ImageRef(Protocol):
    """Where an item's image bytes are; read only during preparation."""

    def read_bytes(self) -> bytes:
        """The encoded image (JPEG, PNG...). Raises FileNotFoundError when it does not exist."""
        ...

    def describe(self) -> str:
        """A short location for messages and reports."""
        ...


@dataclass(frozen=True)
class FileImage:
    path: Path

    def read_bytes(self) -> bytes:
        return Path(self.path).read_bytes()

    def describe(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class BytesImage:
    """An image already in memory (rendered covers, synthetic images, images inside a table)."""

    data: bytes
    name: str = "<bytes>"

    def read_bytes(self) -> bytes:
        return self.data

    def describe(self) -> str:
        return self.name


@dataclass
class RawItems:
    """The item table: parallel lists, one entry per item, in file order."""

    ids: list[str]
    texts: list[str]
    images: list[ImageRef | None]
    features: dict[str, list[FeatureValue]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.texts) != n or len(self.images) != n:
            raise ValueError("RawItems: ids, texts and images must have the same length")
        for name, values in self.features.items():
            if len(values) != n:
                raise ValueError(f"RawItems: feature {name!r} has {len(values)} values for {n} items")

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class RawUsers:
    """Optional user side features (TransRec Figure 2b: age, gender, occupation...)."""

    ids: list[str]
    features: dict[str, list[FeatureValue]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class RawInteractions:
    """The interaction log in file order: ``users[i]`` interacted with ``items[i]`` at ``timestamps[i]``."""

    users: np.ndarray  # str ids, dtype object
    items: np.ndarray  # str ids, dtype object
    timestamps: np.ndarray  # float64 (seconds, or a position where the source has no clock)

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=object)
        self.items = np.asarray(self.items, dtype=object)
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        if not (len(self.users) == len(self.items) == len(self.timestamps)):
            raise ValueError("RawInteractions: users, items and timestamps must have the same length")

    @classmethod
    def from_lists(cls, users: list[str], items: list[str], timestamps: list[float]) -> RawInteractions:
        return cls(
            np.array(users, dtype=object),
            np.array(items, dtype=object),
            np.array(timestamps, dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class RawDataset:
    """What a loader returns.

    ``items`` is None for interaction-only sources (ID models only). ``report`` holds what the loader
    already handled (duplicate item rows, negative feedback...). ``files`` lists the input files, whose
    sizes and hashes are recorded in the prepared dataset's metadata.
    """

    name: str
    interactions: RawInteractions
    items: RawItems | None
    users: RawUsers | None = None
    report: PreparationReport = field(default_factory=PreparationReport)
    files: list[Path] = field(default_factory=list)
    #: Free-form notes carried into the metadata (e.g. "covers are rendered, not real posters").
    notes: list[str] = field(default_factory=list)
