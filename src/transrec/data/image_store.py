"""Images decoded and resized once at preparation time, stored for fast random access.

Two layouts, chosen by ``PrepareConfig.image_format``:

``jpeg``  ``images.bin`` holds the resized images as JPEG bytes back to back; ``image_offsets.npy``
          (int64, ``[n_items + 2]``) gives item ``i``'s bytes as ``bin[offsets[i]:offsets[i + 1]]``
          (empty for the padding index 0 and for items without an image). Compact; a read costs
          one small JPEG decode.
``raw``   ``images.npy`` is a uint8 array ``[n_items + 1, size, size, 3]`` (zeros where there is no
          image). No decode at all; memory-mapped; suits small images and frozen-trunk caching.

``ImageStore`` opens its files lazily, on first access, and drops the handles when pickled, so every
DataLoader worker opens its own memory map instead of inheriting one.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from transrec.config import ConfigError
from transrec.errors import UserError

JPEG_FILE = "images.bin"
OFFSETS_FILE = "image_offsets.npy"
RAW_FILE = "images.npy"


class CorruptImageError(UserError, ValueError):
    """The bytes are not a decodable image."""


def decode_and_resize(data: bytes, size: int) -> Image.Image:
    """Decode ``data``, apply EXIF orientation, convert to RGB, resize the shorter side to ``size``
    (bicubic) and centre-crop to ``size x size``. Raises CorruptImageError if it cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
        image = ImageOps.exif_transpose(image).convert("RGB")
    except Exception as err:  # Pillow raises many types (OSError, SyntaxError, ValueError...)
        raise CorruptImageError(f"cannot decode image: {err}") from err
    return ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buffer.getvalue()


class ImageStoreWriter:
    """Writes an image store item by item, in item-index order (index 0, the padding, first)."""

    def __init__(self, directory: Path, n_rows: int, image_format: str, size: int, jpeg_quality: int = 95):
        if image_format not in ("jpeg", "raw"):
            raise ConfigError(f"image_format must be 'jpeg' or 'raw', got {image_format!r}")
        self.directory, self.format, self.size, self.quality = directory, image_format, size, jpeg_quality
        self.n_rows, self.row = n_rows, 0
        if image_format == "jpeg":
            self._bin = open(directory / JPEG_FILE, "wb")  # noqa: SIM115 (closed in close())
            self._offsets = np.zeros(n_rows + 1, dtype=np.int64)
        else:
            self._array = np.lib.format.open_memmap(
                directory / RAW_FILE, mode="w+", dtype=np.uint8, shape=(n_rows, size, size, 3)
            )

    def add(self, image: Image.Image | np.ndarray | bytes | None) -> None:
        """Append the next row: a resized image (PIL or uint8 ``[size, size, 3]``), JPEG bytes already
        encoded at this size (jpeg layout; copied as they are), or None for no image."""
        if self.row >= self.n_rows:
            raise IndexError("more images than rows")
        if self.format == "jpeg":
            if image is None:
                data = b""
            elif isinstance(image, bytes):
                data = image
            else:
                pil = Image.fromarray(image, "RGB") if isinstance(image, np.ndarray) else image
                data = encode_jpeg(pil, self.quality)
            self._bin.write(data)
            self._offsets[self.row + 1] = self._offsets[self.row] + len(data)
        elif image is not None:
            if isinstance(image, bytes):
                image = decode_and_resize(image, self.size)
            self._array[self.row] = np.asarray(image, dtype=np.uint8)
        self.row += 1

    def close(self) -> None:
        if self.row != self.n_rows:
            raise ValueError(f"image store got {self.row} rows, expected {self.n_rows}")
        if self.format == "jpeg":
            self._bin.close()
            np.save(self.directory / OFFSETS_FILE, self._offsets)
        else:
            self._array.flush()
            del self._array


class ImageStore:
    """Random access to the images of a prepared dataset: ``store[i]`` -> uint8 ``[size, size, 3]``."""

    def __init__(self, directory: str | Path, image_format: str, size: int) -> None:
        self.directory, self.format, self.size = Path(directory), image_format, size
        self._offsets: np.ndarray | None = None
        self._bin: np.ndarray | None = None
        self._raw: np.ndarray | None = None

    def _open(self) -> None:
        if self.format == "jpeg":
            self._offsets = np.load(self.directory / OFFSETS_FILE)
            if self._offsets[-1] > 0:
                self._bin = np.memmap(self.directory / JPEG_FILE, dtype=np.uint8, mode="r")
            else:  # np.memmap refuses empty files
                self._bin = np.zeros(0, dtype=np.uint8)
        else:
            self._raw = np.load(self.directory / RAW_FILE, mmap_mode="r")

    def __getstate__(self) -> dict:
        # Open handles are per process: a DataLoader worker reopens them on first access.
        return {
            "directory": self.directory,
            "format": self.format,
            "size": self.size,
            "_offsets": None,
            "_bin": None,
            "_raw": None,
        }

    def __len__(self) -> int:
        if self._offsets is None and self._raw is None:
            self._open()
        return len(self._offsets) - 1 if self.format == "jpeg" else len(self._raw)

    def has_image(self, index: int) -> bool:
        if self.format == "jpeg":
            if self._offsets is None:
                self._open()
            return bool(self._offsets[index + 1] > self._offsets[index])
        if self._raw is None:
            self._open()
        return bool(self._raw[index].any())

    def encoded(self, index: int) -> bytes:
        """The stored JPEG bytes of item ``index`` (jpeg layout only; b"" without an image)."""
        if self.format != "jpeg":
            raise ValueError("encoded() is only available for the jpeg layout")
        if self._offsets is None:
            self._open()
        return bytes(self._bin[self._offsets[index] : self._offsets[index + 1]])

    def __getitem__(self, index: int) -> np.ndarray:
        if self.format == "raw":
            if self._raw is None:
                self._open()
            return np.array(self._raw[index])
        data = self.encoded(index)
        if not data:
            return np.zeros((self.size, self.size, 3), dtype=np.uint8)
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB"), dtype=np.uint8)

    def batch(self, indices: Iterable[int]) -> np.ndarray:
        """uint8 ``[len(indices), size, size, 3]``."""
        indices = list(indices)
        if self.format == "raw":
            if self._raw is None:
                self._open()
            return np.asarray(self._raw[np.asarray(indices, dtype=np.int64)])
        return (
            np.stack([self[i] for i in indices])
            if indices
            else np.zeros((0, self.size, self.size, 3), np.uint8)
        )
