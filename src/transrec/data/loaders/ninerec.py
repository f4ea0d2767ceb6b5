"""NineRec / PixelRec / MicroLens style: ``<name>_pair.csv``, ``<name>_item.csv`` and cover images.

The NineRec release has one folder per dataset, e.g. ``Bili_Food/``::

    Bili_Food_pair.csv    comma separated, with a header row; one (user, item) interaction per row
        item_id,user_id,timestamp
        6409,1583,1633017538
    Bili_Food_item.csv    comma separated, no header: item id, Chinese title, English title
        6409,一个人的晚餐,Dinner for one
    images/6409.jpg       cover images named by item id (JPEG)

The pair file's columns are found by their header names, in whatever order the file has them (NineRec
writes ``item_id,user_id,timestamp``; MicroLens writes ``user,item,timestamp``, so pass
``user_column="user", item_column="item"``). A pair file without a header row is read with
``pair_header=False``, and ``pair_columns`` then names its columns in order. Timestamps are Unix seconds
(``time_unit="ms"`` for milliseconds, as in MicroLens). QB and TN keep no clock, only the interaction
order: pass ``time_column=None`` and each interaction's position in the file is its timestamp.

Options:
    name: the file prefix; default the folder's name.
    pair_file, item_file: file names inside the folder (or absolute paths); default ``<name>_pair.csv``
        and ``<name>_item.csv`` (MicroLens: ``pair_file="MicroLens-50k_pairs.csv"``).
    user_column, item_column, time_column: pair-file column names (defaults ``user_id``, ``item_id``,
        ``timestamp``); ``time_column=None``: file order.
    pair_header: whether the pair file starts with a header row (default True).
    pair_columns: the pair file's column names in order when ``pair_header=False`` (default
        ``("item_id", "user_id", "timestamp")``, the order of the NineRec release).
    time_unit: ``"s"`` (default) or ``"ms"``; timestamps are converted to seconds.
    item_header: whether the item file starts with a header row (default False, as released).
    item_columns: the item file's column names in order when ``item_header=False`` (default
        ``("item_id", "title_zh", "title_en")``).
    item_id_column: the item id column of the item file (default ``item_id``).
    text_columns: the column(s) joined (by a space) into the item text; default ``("title_en",)``;
        ``("title_zh",)`` for the Chinese titles, ``("title_zh", "title_en")`` for both.
    image_dir: the folder of cover images; relative paths are taken inside the dataset folder. Default:
        ``<folder>/images`` when it exists, else no images. A folder that is given but absent is an error.
    image_pattern: the image file name, ``image_pattern.format(id=item_id)`` (default ``{id}.jpg``).
    on_bad_row: "error" (default) or "skip".

Every item gets a ``FileImage`` when there is an image folder, whether or not its file exists:
preparation counts the missing and corrupt ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transrec.config import ConfigError
from transrec.data.errors import DataError
from transrec.data.loaders import LOADERS
from transrec.data.loaders.common import (
    BadRowPolicy,
    bad_row,
    check_policy,
    header_index,
    normalise_text,
    parse_float,
    read_rows,
    require_file,
)
from transrec.data.report import PreparationReport
from transrec.data.schema import FileImage, ImageRef, RawDataset, RawInteractions, RawItems

TIME_UNITS = {"s": 1.0, "ms": 1000.0}


@LOADERS.register("ninerec")
def load_ninerec(
    path: Path,
    *,
    name: str | None = None,
    pair_file: str | None = None,
    item_file: str | None = None,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str | None = "timestamp",
    pair_header: bool = True,
    pair_columns: Sequence[str] = ("item_id", "user_id", "timestamp"),
    time_unit: str = "s",
    item_header: bool = False,
    item_columns: Sequence[str] = ("item_id", "title_zh", "title_en"),
    item_id_column: str = "item_id",
    text_columns: Sequence[str] = ("title_en",),
    image_dir: str | Path | None = None,
    image_pattern: str = "{id}.jpg",
    on_bad_row: BadRowPolicy = "error",
) -> RawDataset:
    check_policy(on_bad_row)
    if time_unit not in TIME_UNITS:
        raise ConfigError(f"time_unit must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    path = Path(path)
    name = name or path.name
    report = PreparationReport()
    pair_path = require_file(path / (pair_file or f"{name}_pair.csv"), "NineRec pair file")
    item_path = require_file(path / (item_file or f"{name}_item.csv"), "NineRec item file")

    wanted = {"user": user_column, "item": item_column}
    if time_column is not None:
        wanted["time"] = time_column
    interactions = _read_pairs(
        pair_path, pair_header, pair_columns, wanted, TIME_UNITS[time_unit], on_bad_row, report
    )
    folder = _image_folder(path, image_dir)
    items = _read_items(
        item_path,
        item_header,
        item_columns,
        item_id_column,
        text_columns,
        folder,
        image_pattern,
        on_bad_row,
        report,
    )
    notes = [] if time_column is not None else ["no time column: timestamps are positions in the pair file"]
    if folder is None:
        notes.append("no image folder: items are text only")
    return RawDataset(
        name=name,
        interactions=interactions,
        items=items,
        report=report,
        files=[pair_path, item_path],
        notes=notes,
    )


def _header(rows, has_header: bool, columns: Sequence[str], path: Path) -> list[str]:
    if not has_header:
        return list(columns)
    try:
        return next(rows)[1]
    except StopIteration:
        raise DataError("the file is empty (expected a header row)", path, 1) from None


def _read_pairs(
    path: Path,
    has_header: bool,
    columns: Sequence[str],
    wanted: dict[str, str],
    per_second: float,
    on_bad_row: BadRowPolicy,
    report: PreparationReport,
) -> RawInteractions:
    rows = read_rows(path, delimiter=",", encoding="utf-8-sig")
    header = _header(rows, has_header, columns, path)
    index = header_index(header, wanted, path)
    users, items, times = [], [], []
    for position, (line, fields) in enumerate(rows):
        if len(fields) != len(header):
            bad_row(
                f"expected {len(header)} comma-separated fields, found {len(fields)}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        user, item = fields[index["user"]].strip(), fields[index["item"]].strip()
        if not user or not item:
            bad_row("empty user or item id", path, line, on_bad_row, report)
            continue
        when = float(position)
        if "time" in index:
            try:
                when = parse_float(fields[index["time"]], "timestamp", path, line) / per_second
            except DataError as err:
                bad_row(err.problem, path, line, on_bad_row, report)
                continue
        users.append(user)
        items.append(item)
        times.append(when)
    return RawInteractions.from_lists(users, items, times)


def _image_folder(path: Path, image_dir: str | Path | None) -> Path | None:
    if image_dir is None:
        default = path / "images"
        return default if default.is_dir() else None
    folder = path / image_dir
    if not folder.is_dir():
        raise DataError("image folder not found (image_dir)", folder)
    return folder


def _read_items(
    path: Path,
    has_header: bool,
    columns: Sequence[str],
    id_column: str,
    text_columns: Sequence[str],
    image_folder: Path | None,
    image_pattern: str,
    on_bad_row: BadRowPolicy,
    report: PreparationReport,
) -> RawItems:
    rows = read_rows(path, delimiter=",", encoding="utf-8-sig")
    header = _header(rows, has_header, columns, path)
    wanted = {"id": id_column, **{f"text {i + 1}": column for i, column in enumerate(text_columns)}}
    index = header_index(header, wanted, path)
    text_positions = [index[f"text {i + 1}"] for i in range(len(text_columns))]
    ids: list[str] = []
    texts: list[str] = []
    images: list[ImageRef | None] = []
    seen: set[str] = set()
    for line, fields in rows:
        if len(fields) != len(header):
            bad_row(
                f"expected {len(header)} comma-separated fields, found {len(fields)}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        item = fields[index["id"]].strip()
        if not item:
            bad_row("empty item id", path, line, on_bad_row, report)
            continue
        if item in seen:
            report.add("duplicate_item", example=f"{path.name}:{line}: item {item}")
            continue
        seen.add(item)
        ids.append(item)
        texts.append(" ".join(t for t in (normalise_text(fields[i]) for i in text_positions) if t))
        images.append(
            None if image_folder is None else FileImage(image_folder / image_pattern.format(id=item))
        )
    return RawItems(ids=ids, texts=texts, images=images)
