"""Amazon review data (2018, McAuley lab): reviews and metadata as JSON lines, plain or gzipped.

A category, e.g. ``Clothing_Shoes_and_Jewelry``, is two files, one JSON object per line::

    Clothing_Shoes_and_Jewelry.json.gz        (or the 5-core subset Clothing_Shoes_and_Jewelry_5.json.gz)
        {"overall": 5.0, "verified": true, "reviewerID": "A1KLRMWW2FWPL4", "asin": "0000031887",
         "unixReviewTime": 1297468800, "reviewText": "...", ...}
    meta_Clothing_Shoes_and_Jewelry.json.gz
        {"asin": "0000031887", "title": "Ballet Dress-Up Fairy Tutu", "brand": "Boutique Cutie",
         "description": ["This adorable basic ballerina tutu ..."], "category": ["Clothing, ...", ...],
         "main_cat": "Fashion", "imageURL": ["https://..."], "imageURLHighRes": ["https://..."], ...}

(shown on several lines here; one line each in the files). Some metadata lines are not strict JSON but
a Python dict literal (``{'asin': '0000031887', ...}``); those are read with ``ast.literal_eval``, which
only accepts literals and never runs code. A line that is neither is a malformed row. In every text
value HTML tags are removed and HTML entities (``&amp;``) decoded; a list (``description``) is joined
with spaces.

Images: the metadata only has URLs, and this loader never goes online. To use images, download them
yourself (``imageURLHighRes``, else ``imageURL``) as ``<asin>.jpg`` into a folder and pass ``image_dir``.

Options:
    name: the category; default the folder's name.
    reviews_file: default the first that exists of ``<name>.json.gz``, ``<name>.json``,
        ``<name>_5.json.gz``, ``<name>_5.json``.
    meta_file: default ``meta_<name>.json.gz``, else ``meta_<name>.json``.
    text_template: the item text from metadata fields (``common.TextTemplate``); default ``"{title}"``;
        e.g. ``"{title}. {brand}. {description}"``.
    item_features: metadata fields kept as item side features (a list field such as ``category`` gives
        several values); default none.
    min_rating: reviews with ``overall`` below it are counted as ``negative_feedback`` and not used;
        default None (every review is an interaction).
    image_dir: the folder of ``<asin>.jpg`` images (relative paths inside the dataset folder); default
        None: no images.
    image_pattern: default ``{id}.jpg``.
    on_bad_row: "error" (default) or "skip".
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from transrec.data.errors import DataError
from transrec.data.loaders import LOADERS
from transrec.data.loaders.common import BadRowPolicy, TextTemplate, bad_row, check_policy, normalise_text
from transrec.data.report import PreparationReport
from transrec.data.schema import FeatureValue, FileImage, ImageRef, RawDataset, RawInteractions, RawItems

HTML_TAG = re.compile(r"<[a-zA-Z/!][^<>]*>")


def json_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of the non-empty lines of a ``.json`` or ``.json.gz`` file."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line, text in enumerate(handle, start=1):
                if text.strip():
                    yield line, text
    except UnicodeDecodeError as err:
        raise DataError(f"not valid utf-8 text ({err.reason} at byte {err.start})", path) from err
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"unreadable file ({err})", path) from err


def parse_record(text: str) -> dict[str, Any] | None:
    """A JSON object, or a Python dict literal (never evaluated as code); None when it is neither."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def clean_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(t for t in map(clean_text, value) if t)
    return normalise_text(html.unescape(HTML_TAG.sub(" ", str(value))))


def _first_file(path: Path, names: Sequence[str], what: str) -> Path:
    for candidate in names:
        if (path / candidate).is_file():
            return path / candidate
    raise DataError(f"{what} not found (expected one of {', '.join(names)} here)", path)


@LOADERS.register("amazon")
def load_amazon(
    path: Path,
    *,
    name: str | None = None,
    reviews_file: str | None = None,
    meta_file: str | None = None,
    text_template: str = "{title}",
    item_features: Sequence[str] = (),
    min_rating: float | None = None,
    image_dir: str | Path | None = None,
    image_pattern: str = "{id}.jpg",
    on_bad_row: BadRowPolicy = "error",
) -> RawDataset:
    check_policy(on_bad_row)
    path = Path(path)
    name = name or path.name
    report = PreparationReport()
    review_names = (
        [reviews_file]
        if reviews_file
        else [f"{name}{s}" for s in (".json.gz", ".json", "_5.json.gz", "_5.json")]
    )
    meta_names = [meta_file] if meta_file else [f"meta_{name}.json.gz", f"meta_{name}.json"]
    reviews_path = _first_file(path, review_names, "Amazon reviews file")
    meta_path = _first_file(path, meta_names, "Amazon metadata file")
    folder = None
    if image_dir is not None:
        folder = path / image_dir
        if not folder.is_dir():
            raise DataError("image folder not found (image_dir)", folder)
    interactions = _read_reviews(reviews_path, min_rating, on_bad_row, report)
    items = _read_meta(
        meta_path, TextTemplate(text_template), item_features, folder, image_pattern, on_bad_row, report
    )
    notes = ["image URLs are not downloaded; images come only from image_dir"]
    return RawDataset(
        name=name,
        interactions=interactions,
        items=items,
        report=report,
        files=[reviews_path, meta_path],
        notes=notes,
    )


def _read_reviews(
    path: Path, min_rating: float | None, on_bad_row: BadRowPolicy, report: PreparationReport
) -> RawInteractions:
    users, items, times = [], [], []
    for line, text in json_lines(path):
        record = parse_record(text)
        if record is None:
            bad_row("not a JSON object", path, line, on_bad_row, report)
            continue
        user, item = str(record.get("reviewerID") or "").strip(), str(record.get("asin") or "").strip()
        if not user or not item:
            bad_row("empty reviewerID or asin", path, line, on_bad_row, report)
            continue
        when = _number(record.get("unixReviewTime"))
        if when is None:
            bad_row(
                f"unixReviewTime {record.get('unixReviewTime')!r} is not a number",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        if min_rating is not None:
            rating = record.get("overall")
            if not isinstance(rating, int | float) or rating < min_rating:
                report.add("negative_feedback", example=f"{path.name}:{line}: {user} {item} overall={rating}")
                continue
        users.append(user)
        items.append(item)
        times.append(when)
    return RawInteractions.from_lists(users, items, times)


def _number(value: Any) -> float | None:
    """A finite number from a JSON number or numeric string; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _feature(value: Any) -> FeatureValue:
    if isinstance(value, list):
        values = [t for t in map(clean_text, value) if t]
        return values or None
    return clean_text(value) or None


def _read_meta(
    path: Path,
    template: TextTemplate,
    feature_fields: Sequence[str],
    folder: Path | None,
    image_pattern: str,
    on_bad_row: BadRowPolicy,
    report: PreparationReport,
) -> RawItems:
    ids: list[str] = []
    texts: list[str] = []
    images: list[ImageRef | None] = []
    features: dict[str, list[FeatureValue]] = {f: [] for f in feature_fields}
    seen: set[str] = set()
    for line, text in json_lines(path):
        record = parse_record(text)
        if record is None:
            bad_row("neither a JSON object nor a Python dict literal", path, line, on_bad_row, report)
            continue
        item = str(record.get("asin") or "").strip()
        if not item:
            bad_row("empty asin", path, line, on_bad_row, report)
            continue
        if item in seen:
            report.add("duplicate_item", example=f"{path.name}:{line}: asin {item}")
            continue
        seen.add(item)
        ids.append(item)
        texts.append(template.render({f: clean_text(record.get(f)) for f in template.fields}))
        images.append(None if folder is None else FileImage(folder / image_pattern.format(id=item)))
        for field in feature_fields:
            features[field].append(_feature(record.get(field)))
    return RawItems(ids=ids, texts=texts, images=images, features=features)
