"""Reading an export directory (written by ``serving.export.export_model``): the files, their checksums,
and the model with everything it needs to encode items, without the dataset or the run directory.

Layout (``FORMAT_VERSION`` 1):

    manifest.json              format, versions, model and dataset summary, SHA-256 and size of every file
    model/config.json          the checkpoint's ModelConfig, copied byte for byte
    model/model.safetensors    the checkpoint's weights, copied byte for byte
    preprocessing.json         how new content becomes model inputs: text (tokenizer settings, max_tokens,
                               pad id, vocabulary hash) and images (size, store format, JPEG quality)
    tokenizer/tokenizer.json   a Hugging Face tokenizer's file (a hash tokenizer is its settings alone)
    items.jsonl                one line per catalogue item index 1..n: {"index", "id", "text", "modality"}
    item_vectors.safetensors   "vectors" float32 [n + 1, d]: evaluation's item table (row 0 padding)
    content.safetensors        "modality" uint8 [n + 1]; "text_tokens" int32 [n + 1, T] and "text_lengths"
                               int32 [n + 1] when the model reads text
    images/                    the prepared dataset's image store, as it was (when the model reads images)
    popularity.safetensors     "counts" int64 [n + 1]: training interactions per item (s[:-2] of each user)
    added/                     items added and removed while serving (``serving.overlay``; not in the
                               manifest: it has its own checksums)
    cache/                     files the service derives and may rebuild at will: the ONNX graphs of the
                               encoder process (``serving.onnx_backbone``); not in the manifest, safe to
                               delete
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from transrec.data.image_store import ImageStore
from transrec.data.item_content import ItemContent
from transrec.models.recommender import SequentialRecommender
from transrec.serving.content import ContentLimits, ContentPreprocessor, load_tokenizer
from transrec.serving.errors import ExportError

EXPORT_FORMAT = "transrec-export"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_DIR = "model"
PREPROCESSING_FILE = "preprocessing.json"
TOKENIZER_DIR = "tokenizer"
ITEMS_FILE = "items.jsonl"
VECTORS_FILE = "item_vectors.safetensors"
CONTENT_FILE = "content.safetensors"
IMAGES_DIR = "images"
POPULARITY_FILE = "popularity.safetensors"
ADDED_DIR = "added"
CACHE_DIR = "cache"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_problems(directory: Path, files: dict[str, dict[str, Any]]) -> list[str]:
    """One line per file of ``files`` (``{relative path: {"sha256", "bytes"}}``) that is missing under
    ``directory`` or whose SHA-256 differs; empty when all match."""
    problems = []
    for name in sorted(files):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        found = sha256_file(path)
        if found != files[name]["sha256"]:
            problems.append(
                f"{name}: SHA-256 {found[:16]}... differs from the manifest's {files[name]['sha256'][:16]}..."
            )
    return problems


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the export in ``directory``; ExportError when there is none or of another format."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(
            f"{directory} is not a transrec export (no {MANIFEST_FILE}); write one with transrec export"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ExportError(f"{path} is not valid JSON ({err})") from err
    if manifest.get("format") != EXPORT_FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}; "
            f"this transrec reads {EXPORT_FORMAT!r} version {FORMAT_VERSION}; export the model again"
        )
    return manifest


class _ExportedItems:
    """What ``ItemContent`` reads of a ``PreparedDataset``, from an export's files, so that the export
    builds item batches by the very code that evaluation used."""

    def __init__(self, directory: Path, content: dict[str, torch.Tensor], preprocessing: dict[str, Any]):
        self.path = directory
        self.item_modality = content["modality"].numpy()
        self.n_items = len(self.item_modality) - 1
        text = preprocessing.get("text")
        self.text_tokens = content["text_tokens"].numpy() if "text_tokens" in content else None
        self.text_lengths = content["text_lengths"].numpy() if "text_lengths" in content else None
        self.meta = {"tokenizer": {"pad_id": text["pad_id"]} if text else None}
        images = preprocessing.get("images")
        self.images = None
        if images and (directory / IMAGES_DIR).is_dir():
            self.images = ImageStore(directory / IMAGES_DIR, images["format"], images["size"])


@dataclass
class ExportBundle:
    """An export directory opened for serving: the model in eval mode and the catalogue's arrays.

    ``item_ids[i]`` / ``texts[i]`` / ``modality[i]`` describe item index ``i`` (1..n; 0 is padding);
    ``vectors`` is float32 ``[n + 1, d]`` on the model's device; ``popularity`` int64 ``[n + 1]``."""

    directory: Path
    manifest: dict[str, Any]
    preprocessing: dict[str, Any]
    model: SequentialRecommender
    item_ids: list[str]
    texts: list[str]
    modality: np.ndarray
    vectors: torch.Tensor
    popularity: np.ndarray
    content_tensors: dict[str, torch.Tensor]

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    @cached_property
    def content(self) -> ItemContent:
        """The catalogue's content as the model's item encoder reads it (tokens, images)."""
        encoder = self.model.item_encoder
        source = _ExportedItems(self.directory, self.content_tensors, self.preprocessing)
        return ItemContent(source, text=encoder.needs_text, image=encoder.needs_image)  # type: ignore[arg-type]

    def preprocessor(self, limits: ContentLimits | None = None) -> ContentPreprocessor:
        """Turns new items' records into model inputs the way this export's dataset was prepared."""
        text = self.preprocessing.get("text")
        tokenizer = None
        if text and self.model.item_encoder.needs_text:
            tokenizer = load_tokenizer(text["tokenizer"], self.directory / TOKENIZER_DIR)
        encoder = self.model.item_encoder
        return ContentPreprocessor(
            self.model.config.item_encoder,
            reads_text=encoder.needs_text and encoder.transferable,
            reads_image=encoder.needs_image and encoder.transferable,
            tokenizer=tokenizer,
            max_tokens=text["max_tokens"] if text else 0,
            images=self.preprocessing.get("images"),
            limits=limits or ContentLimits(),
        )


def open_export(
    directory: str | Path, verify: bool = True, device: str | torch.device = "cpu"
) -> ExportBundle:
    """Open the export in ``directory``. With ``verify`` every file's SHA-256 is checked against the
    manifest first (ExportError naming each file that differs or is missing)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if verify:
        problems = checksum_problems(directory, manifest["files"])
        if problems:
            raise ExportError(f"{directory} does not match its manifest: " + "; ".join(problems))
    model = SequentialRecommender.from_pretrained(directory / MODEL_DIR, map_location=device)
    model.eval()
    rows = [json.loads(line) for line in (directory / ITEMS_FILE).read_text(encoding="utf-8").splitlines()]
    content = load_file(str(directory / CONTENT_FILE))
    vectors = load_file(str(directory / VECTORS_FILE))["vectors"].to(device)
    if vectors.shape != (len(rows) + 1, model.config.d_model):
        raise ExportError(
            f"{directory / VECTORS_FILE} holds {tuple(vectors.shape)} vectors; the export has "
            f"{len(rows)} items (+ padding) of dimension {model.config.d_model}"
        )
    return ExportBundle(
        directory=directory,
        manifest=manifest,
        preprocessing=json.loads((directory / PREPROCESSING_FILE).read_text(encoding="utf-8")),
        model=model,
        item_ids=[""] + [row["id"] for row in rows],
        texts=[""] + [row["text"] for row in rows],
        modality=content["modality"].numpy(),
        vectors=vectors,
        popularity=load_file(str(directory / POPULARITY_FILE))["counts"].numpy(),
        content_tensors=content,
    )
