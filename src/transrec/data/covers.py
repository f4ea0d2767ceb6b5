"""Cover images *rendered* from a movie's own metadata (MovieLens has no images).

No real dataset with images and interactions exists offline, so the embedded default pairs
MovieLens-100K's real interactions and titles with covers drawn deterministically from each movie's
title, year and genres. They are not posters: they carry exactly the information of the metadata, in
pixels, so that the image and mixture-of-modality paths have real interactions to learn from.

How a cover is drawn (size x size RGB, PNG):
- background: a vertical gradient between the colours of the movie's first two genres;
- a darker band whose height grows with the film's age (release year);
- one glyph per genre (each genre its own shape and colour), placed by a hash of the title;
- the title, wrapped, in the middle, and the year at the bottom.
"""

from __future__ import annotations

import hashlib
import io
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GENRE_COLOURS: dict[str, tuple[int, int, int]] = {
    "Action": (200, 40, 40),
    "Adventure": (230, 140, 30),
    "Animation": (250, 210, 60),
    "Children's": (120, 220, 120),
    "Comedy": (250, 240, 120),
    "Crime": (60, 60, 70),
    "Documentary": (140, 140, 110),
    "Drama": (90, 60, 140),
    "Fantasy": (180, 110, 220),
    "Film-Noir": (30, 30, 30),
    "Horror": (110, 10, 20),
    "Musical": (240, 120, 200),
    "Mystery": (40, 70, 120),
    "Romance": (240, 110, 140),
    "Sci-Fi": (40, 200, 220),
    "Thriller": (150, 30, 60),
    "War": (100, 110, 60),
    "Western": (190, 130, 70),
    "unknown": (128, 128, 128),
}
_SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "cross")


def _colour(genre: str) -> tuple[int, int, int]:
    if genre in GENRE_COLOURS:
        return GENRE_COLOURS[genre]
    digest = hashlib.blake2b(genre.encode(), digest_size=3).digest()
    return (digest[0], digest[1], digest[2])


def _shape_of(genre: str) -> str:
    names = list(GENRE_COLOURS)
    index = (
        names.index(genre) if genre in names else hashlib.blake2b(genre.encode(), digest_size=1).digest()[0]
    )
    return _SHAPES[index % len(_SHAPES)]


def _glyph(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if shape == "ellipse":
        draw.ellipse(box, fill=fill, outline=(255, 255, 255))
    elif shape == "rectangle":
        draw.rectangle(box, fill=fill, outline=(255, 255, 255))
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill, outline=(255, 255, 255))
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill, outline=(255, 255, 255))
    else:
        w = max(2, (x1 - x0) // 4)
        draw.rectangle((cx - w, y0, cx + w, y1), fill=fill)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=fill)


def render_cover(title: str, year: str | None, genres: list[str], size: int = 128) -> bytes:
    """PNG bytes of the cover of a movie; the same arguments always give the same bytes."""
    genres = genres or ["unknown"]
    top = np.array(_colour(genres[0]), dtype=np.float32)
    bottom = np.array(_colour(genres[1] if len(genres) > 1 else genres[0]), dtype=np.float32) * 0.6
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(size, axis=1)
    try:
        age = min(max(1998 - int(year or 1998), 0), 80)
    except ValueError:
        age = 0
    band = int(size * 0.08 + size * 0.5 * age / 80)
    pixels[:band] *= 0.55
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)

    seed = int.from_bytes(hashlib.blake2b(title.encode("utf-8"), digest_size=8).digest(), "little")
    rng = np.random.default_rng(seed)
    glyph = size // 5
    for genre in genres:
        x = int(rng.integers(0, size - glyph))
        y = int(rng.integers(size // 2, size - glyph))
        _glyph(draw, _shape_of(genre), (x, y, x + glyph, y + glyph), _colour(genre))

    font = ImageFont.load_default()
    lines = textwrap.wrap(title, width=max(8, size // 9))[:3]
    y = size // 4
    for line in lines:
        draw.text((4, y), line, fill=(255, 255, 255), font=font)
        y += 12
    if year:
        draw.text((4, size - 14), str(year), fill=(255, 255, 255), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
