"""Shared helpers for the loader tests: fixture folders copied to a temporary place, tiny real images."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def jpeg_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_images(folder: Path, valid: Iterable[str], corrupt: Iterable[str] = ()) -> None:
    """Valid tiny JPEGs at ``folder/<name>`` for ``valid``, junk bytes for ``corrupt``."""
    for name in valid:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg_bytes())
    for name in corrupt:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"this is not an image")


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Callable[[str], Path]:
    """Copy ``tests/fixtures/<format>`` to a temporary folder (tests add images to it) and return it."""

    def copy(fmt: str) -> Path:
        target = tmp_path / fmt
        shutil.copytree(FIXTURES / fmt, target)
        return target

    return copy


def prepare_counts(raw, output: Path) -> tuple[tuple[int, int, int], dict[str, int]]:
    """Prepare ``raw`` with 1-cores (only the built-in short-user rule removes users) and tiny images;
    return ((users, items, interactions), the report's counts)."""
    from transrec.data.prepare import PrepareConfig, prepare

    config = PrepareConfig(user_k=1, item_k=1, image_size=8)
    dataset = prepare(raw, config, output, progress=False)
    return (dataset.n_users, dataset.n_items, dataset.n_interactions), dataset.report["counts"]


#: What every fixture holds once: the awkward rows the loaders record and preparation removes or counts.
AWKWARD = {
    "malformed_row": 1,
    "duplicate_item": 1,
    "duplicate_interaction": 1,
    "unknown_item": 1,
    "empty_text": 1,
    "missing_image": 1,
    "corrupt_image": 1,
    "short_user": 1,
    "short_user_interaction": 1,
}
