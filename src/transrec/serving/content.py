"""New items' content -> model inputs, exactly as preparation made them for the catalogue's items.

A record is ``{"text": str | None, "image": bytes | None}`` (optionally with ``"id"``). Its text is
normalised and tokenised as ``data.prepare`` did (whitespace collapsed, the dataset's tokenizer, its
``max_tokens``); its image is decoded from memory with Pillow (never from a path or URL), oriented,
resized and centre-cropped as ``data.image_store.decode_and_resize`` does, and, for a dataset that
stores JPEG, passed through the same JPEG encoding at the same quality, so that the item encoder sees
the pixels an item of the prepared dataset with the same picture would have had.

Refusals are ``ContentError``s with a ``reason`` (``serving.errors.CONTENT_REASONS``): over-long text
(``ContentLimits.max_text_chars``), image bytes over ``max_image_bytes`` (``too_large``), undecodable
bytes, a decompression bomb (more pixels than ``max_image_pixels``, or Pillow's own bomb check), a
modality the model does not read, or no content at all.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from transrec.data.image_store import CorruptImageError, decode_and_resize, encode_jpeg
from transrec.data.item_content import ItemBatch
from transrec.data.loaders.common import normalise_text
from transrec.data.prepared import IMAGE, TEXT
from transrec.data.tokenize import HashTokenizer, HFTokenizer, Tokenizer, tokenize_texts
from transrec.serving.errors import ContentError, ExportError, InvalidRequestError

#: Item encoders that need every modality on every item (PMMRec's ``mm`` fuses text and image).
REQUIRES_EVERY_MODALITY = frozenset({"mm"})


@dataclass(frozen=True)
class ContentLimits:
    """What serving accepts of a new item's content (the Python API and the HTTP layer alike).

    Args:
        max_text_chars: longest text, in characters, before normalisation (default 10,000).
        max_image_bytes: largest image, in encoded bytes (default 5 MiB).
        max_image_pixels: most pixels (width x height) an image may declare; more is refused as a
            decompression bomb before any pixel is decoded (default 40 million, about 6300 x 6300).
    """

    max_text_chars: int = 10_000
    max_image_bytes: int = 5 * 1024 * 1024
    max_image_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        for name in ("max_text_chars", "max_image_bytes", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise InvalidRequestError(
                    f"ContentLimits.{name} must be at least 1, got {getattr(self, name)}"
                )


@dataclass(frozen=True)
class PreparedItem:
    """One record checked and preprocessed: its tokens (``None`` without text) and its uint8
    ``[size, size, 3]`` image (``None`` without one)."""

    id: str | None
    text: str
    tokens: np.ndarray | None
    image: np.ndarray | None

    @property
    def modality(self) -> int:
        return (TEXT if self.tokens is not None else 0) | (IMAGE if self.image is not None else 0)


def modality_name(bits: int) -> str:
    return ["none", "text", "image", "both"][int(bits)]


def load_tokenizer(settings: Mapping[str, Any], directory: Path) -> Tokenizer:
    """The tokenizer an export recorded (``preprocessing.json``'s ``text.tokenizer``), checked against
    the vocabulary hash the dataset was prepared with; ExportError when it differs."""
    kind = settings.get("kind")
    if kind == "hash":
        tokenizer: Tokenizer = HashTokenizer(
            vocab_size=settings["vocab_size"],
            name=settings["name"],
            pad_id=settings["pad_id"],
            cls_id=settings["cls_id"],
            sep_id=settings["sep_id"],
        )
    elif kind == "huggingface":
        tokenizer = HFTokenizer(directory)
        tokenizer.name = settings["name"]
    else:
        raise ExportError(f"{directory}: unknown tokenizer kind {kind!r} in the export")
    if tokenizer.vocab_hash != settings["vocab_hash"]:
        raise ExportError(
            f"{directory}: the tokenizer's vocabulary hash {tokenizer.vocab_hash[:19]}... differs from the "
            f"one the dataset was prepared with ({settings['vocab_hash'][:19]}...)"
        )
    return tokenizer


class ContentPreprocessor:
    """Checks records against ``limits`` and the model's modalities, and turns them into an ``ItemBatch``.

    Args:
        item_encoder: the model's item encoder name (``mm`` needs text and image on every item).
        reads_text / reads_image: which modalities the model's item encoder reads (neither for an ID
            model, which cannot encode content).
        tokenizer, max_tokens: how texts were tokenised (None when the model reads no text).
        images: the prepared dataset's image settings (``format``, ``size``, ``jpeg_quality``), or None.
        limits: see ``ContentLimits``.
    """

    def __init__(
        self,
        item_encoder: str,
        reads_text: bool,
        reads_image: bool,
        tokenizer: Tokenizer | None,
        max_tokens: int,
        images: Mapping[str, Any] | None,
        limits: ContentLimits,
    ) -> None:
        self.item_encoder, self.limits = item_encoder, limits
        self.reads_text = reads_text and tokenizer is not None
        self.reads_image = reads_image and images is not None
        self.every_modality = item_encoder in REQUIRES_EVERY_MODALITY
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.images = dict(images) if images else None

    @property
    def accepts_content(self) -> bool:
        return self.reads_text or self.reads_image

    def prepare(self, records: Sequence[Any], what: str = "record") -> list[PreparedItem]:
        """Check and preprocess every record; the first refused one raises (naming it by id or position)."""
        return [self.prepare_one(record, f"{what} {k}") for k, record in enumerate(records)]

    def prepare_one(self, record: Any, position: str) -> PreparedItem:
        if not isinstance(record, Mapping):
            raise InvalidRequestError(
                f"{position}: a content record is a dict with 'text' and/or 'image', "
                f"got {type(record).__name__}"
            )
        unknown = sorted(set(record) - {"id", "text", "image"})
        if unknown:
            raise InvalidRequestError(
                f"{position}: unknown fields {unknown}; a record has id, text and image"
            )
        item_id = record.get("id")
        if item_id is not None and (not isinstance(item_id, str) or not item_id):
            raise InvalidRequestError(f"{position}: 'id' must be a non-empty string, got {item_id!r}")
        name = f"item {item_id!r}" if item_id else position
        text, image = record.get("text"), record.get("image")
        if text is not None and not isinstance(text, str):
            raise InvalidRequestError(f"{name}: 'text' must be a string or null, got {type(text).__name__}")
        if image is not None and not isinstance(image, (bytes, bytearray, memoryview)):
            raise InvalidRequestError(f"{name}: 'image' must be bytes or null, got {type(image).__name__}")
        if text is not None and len(text) > self.limits.max_text_chars:
            raise ContentError(
                "text_too_long",
                f"text of {len(text):,} characters; at most {self.limits.max_text_chars:,}",
                name,
            )
        if image is not None and len(image) > self.limits.max_image_bytes:
            raise ContentError(
                "too_large", f"image of {len(image):,} bytes; at most {self.limits.max_image_bytes:,}", name
            )
        text = normalise_text(text)
        has_text, has_image = bool(text), image is not None
        if not (has_text or has_image):
            raise ContentError("empty", "the record has neither text nor an image", name)
        self._check_modalities(has_text, has_image, name)
        tokens = None
        if has_text:
            row, length = tokenize_texts(self.tokenizer, [text], self.max_tokens)
            tokens = row[0, : int(length[0])]
        pixels = self.decode_image(bytes(image), name) if has_image else None
        return PreparedItem(item_id, text if has_text else "", tokens, pixels)

    def _check_modalities(self, has_text: bool, has_image: bool, name: str) -> None:
        if not self.accepts_content:
            raise ContentError(
                "unsupported_modality",
                f"the model's {self.item_encoder!r} item encoder reads no content (an ID model scores only "
                "the items it was trained on)",
                name,
            )
        reads = " and ".join(m for m, on in (("text", self.reads_text), ("images", self.reads_image)) if on)
        if has_text and not self.reads_text:
            raise ContentError(
                "unsupported_modality", f"the model reads {reads} only; the record has text", name
            )
        if has_image and not self.reads_image:
            raise ContentError(
                "unsupported_modality", f"the model reads {reads} only; the record has an image", name
            )
        if self.every_modality and not (has_text and has_image):
            raise ContentError(
                "unsupported_modality",
                f"the {self.item_encoder!r} item encoder needs both text and an image on every item",
                name,
            )

    def decode_image(self, data: bytes, name: str = "image") -> np.ndarray:
        """uint8 ``[size, size, 3]``: the image as the prepared dataset stores images (see the module)."""
        assert self.images is not None
        self._check_pixels(data, name)
        try:
            image = decode_and_resize(data, int(self.images["size"]))
        except CorruptImageError as err:
            raise ContentError(
                "undecodable", f"cannot decode the image ({err.__cause__ or err})", name
            ) from err
        if self.images["format"] == "jpeg":
            # The prepared store holds JPEG bytes at this quality: decode them back as ImageStore does.
            with Image.open(io.BytesIO(encode_jpeg(image, int(self.images["jpeg_quality"])))) as stored:
                return np.array(stored.convert("RGB"), dtype=np.uint8)
        return np.asarray(image, dtype=np.uint8)

    def _check_pixels(self, data: bytes, name: str) -> None:
        """Refuse a decompression bomb from the header alone, before any pixel is decoded."""
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                with Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise ContentError(
                    "decompression_bomb", f"refused as a decompression bomb ({err})", name
                ) from err
            except (
                Exception
            ) as err:  # Pillow raises many types (UnidentifiedImageError, OSError, SyntaxError)
                raise ContentError("undecodable", f"cannot decode the image ({err})", name) from err
        if width * height > self.limits.max_image_pixels:
            raise ContentError(
                "decompression_bomb",
                f"the image declares {width} x {height} = {width * height:,} pixels; at most "
                f"{self.limits.max_image_pixels:,}",
                name,
            )

    def batch(self, items: Sequence[PreparedItem]) -> ItemBatch:
        """The ``ItemBatch`` of these items, laid out as ``data.item_content.ItemContent.batch`` lays out
        the catalogue's (tokens right-padded to the longest, zero images where an item has none).
        ``item_ids`` are positions 1..U: serving refuses models that look items up by index."""
        n = len(items)
        modality = torch.tensor([item.modality for item in items], dtype=torch.uint8)
        out = ItemBatch(item_ids=torch.arange(1, n + 1), modality=modality)
        if self.reads_text:
            lengths = [0 if item.tokens is None else len(item.tokens) for item in items]
            width = max(max(lengths, default=1), 1)
            ids = np.full((n, width), self.tokenizer.pad_id, dtype=np.int64)
            for row, item in enumerate(items):
                if item.tokens is not None:
                    ids[row, : len(item.tokens)] = item.tokens
            out.input_ids = torch.from_numpy(ids)
            out.attention_mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
        if self.reads_image:
            size = int(self.images["size"])
            pixels = np.zeros((n, size, size, 3), dtype=np.uint8)
            for row, item in enumerate(items):
                if item.image is not None:
                    pixels[row] = item.image
            out.images = torch.from_numpy(pixels)
        return out
