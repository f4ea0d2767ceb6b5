"""Generic tables: CSV, TSV or Parquet files, with a mapping from their columns to what transrec needs.

Any dataset that is a table of interactions (and optionally a table of items and one of users) can be
read without writing a loader. Example, a folder with two files::

    interactions.csv
        user,movie,stars,when
        u1,m7,4,2021-03-01 10:00:00
    movies.tsv
        movie_id	title	plot	poster
        m7	Heat	A group of professional bank robbers ...	posters/m7.jpg

    load_raw("tabular", "folder", interactions="interactions.csv", items="movies.tsv",
             columns={"user": "user", "item": "movie", "time": "when", "item_id": "movie_id",
                      "text": "{title}. {plot}", "image": "poster"},
             time_format="%Y-%m-%d %H:%M:%S")

CSV and TSV files have a header row; the delimiter comes from the extension (``.csv``: comma, ``.tsv``,
``.tab``, ``.txt``: tab) unless ``delimiter`` is given. Parquet files (``.parquet``, ``.pq``) need the
optional ``pyarrow`` package (``pip install transrec[parquet]``); their "line" numbers in messages are
row numbers counted from 1.

Options:
    interactions: the interactions file, relative to ``path`` (or absolute); default ``path`` itself
        when ``path`` is a file.
    items: the items file (optional; without it the dataset has no item content: ID models only).
    users: the users file (optional; read only for ``user_features``).
    columns: mapping of roles to column names; keys and defaults:
        ``user`` ("user_id"), ``item`` ("item_id"), ``time`` ("timestamp"; None: the file order is the
        chronological order) in the interactions file; ``item_id`` (default: the ``item`` column name),
        ``text`` (None: no text; a column name, a list of column names joined by a space, or a
        ``common.TextTemplate`` string such as ``"{title}. {plot}"``), ``image`` (None: no images; a
        column holding a path relative to ``image_root``, or in Parquet the image bytes, or a struct
        with a ``bytes`` field as Hugging Face datasets write it) in the items file; ``user_id``
        (default: the ``user`` column name) in the users file.
    time_format: None (default): the time column holds numbers (seconds; Parquet timestamp and date
        columns are converted); else a ``strptime`` format, or a list of them tried in order
        (naive times are read as UTC).
    item_features, user_features: columns kept as side features (one category each); default none.
    image_root: the folder image paths are relative to; default the items file's folder.
    delimiter: overrides the delimiter for every CSV/TSV file.
    on_bad_row: "error" (default) or "skip".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from transrec.config import ConfigError
from transrec.data.errors import DataError
from transrec.data.loaders import LOADERS
from transrec.data.loaders.common import (
    BadRowPolicy,
    TextTemplate,
    bad_row,
    check_policy,
    header_index,
    normalise_text,
    parse_datetime,
    parse_float,
    read_rows,
)
from transrec.data.report import PreparationReport
from transrec.data.schema import (
    BytesImage,
    FeatureValue,
    FileImage,
    ImageRef,
    RawDataset,
    RawInteractions,
    RawItems,
    RawUsers,
)

DEFAULT_COLUMNS: dict[str, Any] = {"user": "user_id", "item": "item_id", "time": "timestamp"}
ROLES = ("user", "item", "time", "item_id", "text", "image", "user_id")
DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
PARQUET = (".parquet", ".pq")


@LOADERS.register("tabular")
def load_tabular(
    path: Path,
    *,
    interactions: str | Path | None = None,
    items: str | Path | None = None,
    users: str | Path | None = None,
    columns: dict[str, Any] | None = None,
    time_format: str | Sequence[str] | None = None,
    item_features: Sequence[str] = (),
    user_features: Sequence[str] = (),
    image_root: str | Path | None = None,
    delimiter: str | None = None,
    on_bad_row: BadRowPolicy = "error",
) -> RawDataset:
    check_policy(on_bad_row)
    unknown = set(columns or {}) - set(ROLES)
    if unknown:
        raise ConfigError(f"unknown column roles {sorted(unknown)}; known: {', '.join(ROLES)}")
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    formats = [time_format] if isinstance(time_format, str) else time_format
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if interactions is None and not path.is_file():
        raise ConfigError("tabular: pass interactions=<file> (or give the interactions file as the path)")
    inter_path = _existing(path if interactions is None else folder / interactions, "interactions file")
    report = PreparationReport()
    reader = _Reader(delimiter, on_bad_row, report)
    files = [inter_path]

    raw_interactions = _read_interactions(reader, inter_path, cols, formats)

    raw_items = None
    if items is not None:
        item_path = _existing(folder / items, "items file")
        files.append(item_path)
        root = item_path.parent if image_root is None else folder / image_root
        raw_items = _read_items(reader, item_path, cols, item_features, root)
    elif cols.get("text") is not None or cols.get("image") is not None:
        raise ConfigError("tabular: text or image columns were given, but no items file")
    raw_users = None
    if user_features:
        if users is None:
            raise ConfigError("tabular: user_features need a users file (users=...)")
        user_path = _existing(folder / users, "users file")
        files.append(user_path)
        raw_users = _read_users(reader, user_path, cols.get("user_id") or cols["user"], user_features)
    name = path.stem if path.is_file() else path.name
    notes = [] if cols["time"] is not None else ["no time column: timestamps are positions in the file"]
    return RawDataset(
        name=name,
        interactions=raw_interactions,
        items=raw_items,
        users=raw_users,
        report=report,
        files=files,
        notes=notes,
    )


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what} not found", path)
    return path


class _Reader:
    """Rows of CSV/TSV/Parquet files as ``(line, {role: value})``, malformed rows handled by the policy."""

    def __init__(self, delimiter: str | None, on_bad_row: BadRowPolicy, report: PreparationReport) -> None:
        self.delimiter = delimiter
        self.on_bad_row = on_bad_row
        self.report = report

    def rows(self, path: Path, wanted: dict[str, str]) -> Iterator[tuple[int, dict[str, Any]]]:
        if path.suffix.lower() in PARQUET:
            yield from _parquet_rows(path, wanted)
            return
        delimiter = self.delimiter or DELIMITERS.get(path.suffix.lower())
        if delimiter is None:
            raise DataError(
                f"cannot tell the delimiter from the extension {path.suffix!r}; pass delimiter", path
            )
        rows = read_rows(path, delimiter=delimiter, encoding="utf-8-sig")
        try:
            _, header = next(rows)
        except StopIteration:
            raise DataError("the file is empty (expected a header row)", path, 1) from None
        index = header_index(header, wanted, path)
        for line, fields in rows:
            if len(fields) != len(header):
                problem = f"expected {len(header)} fields, found {len(fields)}"
                bad_row(problem, path, line, self.on_bad_row, self.report)
                continue
            yield line, {role: fields[i] for role, i in index.items()}


def _read_interactions(
    reader: _Reader, path: Path, cols: dict[str, Any], formats: Sequence[str] | None
) -> RawInteractions:
    wanted = {"user": cols["user"], "item": cols["item"]}
    if cols["time"] is not None:
        wanted["time"] = cols["time"]
    users, items, times = [], [], []
    for position, (line, row) in enumerate(reader.rows(path, wanted)):
        user, item = _id(row["user"]), _id(row["item"])
        if not user or not item:
            bad_row("empty user or item id", path, line, reader.on_bad_row, reader.report)
            continue
        try:
            when = float(position) if "time" not in row else _time(row["time"], formats, path, line)
        except DataError as err:
            bad_row(err.problem, path, line, reader.on_bad_row, reader.report)
            continue
        users.append(user)
        items.append(item)
        times.append(when)
    return RawInteractions.from_lists(users, items, times)


def _parquet_rows(path: Path, wanted: dict[str, str]) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "reading Parquet needs pyarrow: pip install 'transrec[parquet]' (or pyarrow)"
        ) from None
    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several error types for a bad file
        raise DataError(f"unreadable Parquet file ({err})", path) from err
    names = table.schema_arrow.names
    missing = [f"{c!r} (for {role})" for role, c in wanted.items() if c not in names]
    if missing:
        raise DataError(f"no column {', '.join(missing)}; the file has: {', '.join(names)}", path)
    line = 0
    for batch in table.iter_batches(columns=list(dict.fromkeys(wanted.values()))):
        for record in batch.to_pylist():
            line += 1
            yield line, {role: record[c] for role, c in wanted.items()}


def _id(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _time(value: Any, formats: Sequence[str] | None, path: Path, line: int) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    if value is None:
        raise DataError("empty time", path, line)
    if formats is None:
        return parse_float(str(value), "timestamp", path, line)
    return parse_datetime(str(value), formats, path, line)


def _text_of(row: dict[str, Any], spec: Any, template: TextTemplate | None) -> str:
    if template is not None:
        return template.render({f: "" if row[f] is None else str(row[f]) for f in template.fields})
    return " ".join(t for t in (normalise_text(None if row[c] is None else str(row[c])) for c in spec) if t)


def _image_of(value: Any, root: Path, where: str) -> ImageRef | None:
    if isinstance(value, dict):  # Hugging Face datasets' Image feature: {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray):
        return BytesImage(bytes(value), name=where) if value else None
    if value is None or not str(value).strip():
        return None
    return FileImage(root / str(value).strip())


def _read_items(reader: _Reader, path: Path, cols: dict[str, Any], feature_columns, root: Path) -> RawItems:
    text = cols.get("text")
    template = TextTemplate(text) if isinstance(text, str) and "{" in text else None
    text_columns: list[str] = (
        [] if text is None or template else [text] if isinstance(text, str) else list(text)
    )
    wanted = {"id": cols.get("item_id") or cols["item"]}
    wanted |= {c: c for c in [*(template.fields if template else text_columns), *feature_columns]}
    if cols.get("image") is not None:
        wanted["image"] = cols["image"]
    ids: list[str] = []
    texts: list[str] = []
    images: list[ImageRef | None] = []
    features: dict[str, list[FeatureValue]] = {c: [] for c in feature_columns}
    seen: set[str] = set()
    for line, row in reader.rows(path, wanted):
        item = _id(row["id"])
        if not item:
            bad_row("empty item id", path, line, reader.on_bad_row, reader.report)
            continue
        if item in seen:
            reader.report.add("duplicate_item", example=f"{path.name}:{line}: item {item}")
            continue
        seen.add(item)
        ids.append(item)
        texts.append(_text_of(row, text_columns, template) if text is not None else "")
        images.append(_image_of(row["image"], root, f"{path.name}:{line}") if "image" in row else None)
        for column in feature_columns:
            features[column].append(_id(row[column]) or None)
    return RawItems(ids=ids, texts=texts, images=images, features=features)


def _read_users(reader: _Reader, path: Path, id_column: str, feature_columns) -> RawUsers:
    ids: list[str] = []
    features: dict[str, list[FeatureValue]] = {c: [] for c in feature_columns}
    seen: set[str] = set()
    for line, row in reader.rows(path, {"id": id_column, **{c: c for c in feature_columns}}):
        user = _id(row["id"])
        if not user or user in seen:
            bad_row(f"empty or repeated user id {user!r}", path, line, reader.on_bad_row, reader.report)
            continue
        seen.add(user)
        ids.append(user)
        for column in feature_columns:
            features[column].append(_id(row[column]) or None)
    return RawUsers(ids=ids, features=features)
