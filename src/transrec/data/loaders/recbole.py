"""RecBole atomic files: ``<name>.inter``, ``<name>.item``, ``<name>.user``.

Each file is tab separated with a typed header, ``field:type`` where type is one of ``token``,
``token_seq``, ``float``, ``float_seq``. Example (MovieLens-100K as shipped with RecBole)::

    user_id:token	item_id:token	rating:float	timestamp:float
    196	242	3	881250949

Options:
    name: the file stem; default the folder's name.
    user_field, item_field, time_field: field names (defaults user_id, item_id, timestamp). Without a
        time field, the file order is the chronological order.
    text_template: how an item's text is composed from ``.item`` fields, e.g.
        ``"{movie_title} ({release_year}). Genres: {class}"``; default: the ``token_seq`` fields joined.
    item_feature_fields / user_feature_fields: side features to keep (``token`` -> one category,
        ``token_seq`` -> several); default none.
    image_dir, image_pattern: cover images as files, ``image_pattern.format(id=item_id)`` inside
        ``image_dir`` (default pattern ``{id}.jpg``).
    on_bad_row: "error" or "skip".
"""

from __future__ import annotations

from pathlib import Path

from transrec.data.errors import DataError
from transrec.data.loaders import LOADERS
from transrec.data.loaders.common import (
    BadRowPolicy,
    TextTemplate,
    bad_row,
    check_policy,
    parse_float,
    read_rows,
    require_file,
)
from transrec.data.report import PreparationReport
from transrec.data.schema import (
    FeatureValue,
    FileImage,
    ImageRef,
    RawDataset,
    RawInteractions,
    RawItems,
    RawUsers,
)

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def read_atomic(path: Path, on_bad_row: BadRowPolicy, report: PreparationReport):
    """Yield ``(line, {field: value})`` rows of an atomic file; the first item is the typed header."""
    rows = read_rows(path, delimiter="\t", quoting=False)
    try:
        header_line, header = next(rows)
    except StopIteration:
        raise DataError(
            "the file is empty (expected a typed header such as user_id:token)", path, 1
        ) from None
    fields: list[tuple[str, str]] = []
    for column in header:
        name, _, kind = column.strip().partition(":")
        if kind not in ATOMIC_TYPES:
            raise DataError(
                f"header column {column!r} is not of the form name:type "
                f"with type in {', '.join(ATOMIC_TYPES)}",
                path,
                header_line,
            )
        fields.append((name, kind))
    yield dict(fields)
    names = [name for name, _ in fields]
    for line, values in rows:
        if len(values) != len(names):
            bad_row(
                f"expected {len(names)} tab-separated fields, found {len(values)}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        yield line, dict(zip(names, values))


def _feature(value: str, kind: str) -> FeatureValue:
    value = value.strip()
    if not value:
        return None
    return value.split() if kind.endswith("_seq") else value


@LOADERS.register("recbole")
def load_recbole(
    path: Path,
    *,
    name: str | None = None,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str | None = "timestamp",
    text_template: str | None = None,
    item_feature_fields: list[str] | tuple[str, ...] = (),
    user_feature_fields: list[str] | tuple[str, ...] = (),
    image_dir: str | Path | None = None,
    image_pattern: str = "{id}.jpg",
    on_bad_row: BadRowPolicy = "error",
) -> RawDataset:
    check_policy(on_bad_row)
    path = Path(path)
    name = name or path.name
    report = PreparationReport()
    inter_path = require_file(path / f"{name}.inter", "RecBole interaction file")
    files = [inter_path]

    rows = read_atomic(inter_path, on_bad_row, report)
    types = next(rows)
    for field in (user_field, item_field):
        if field not in types:
            raise DataError(f"no field {field!r} in the header; it has {', '.join(types)}", inter_path, 1)
    use_time = time_field is not None and time_field in types
    users, items, times = [], [], []
    for position, (line, row) in enumerate(rows):
        user, item = row[user_field].strip(), row[item_field].strip()
        if not user or not item:
            bad_row("empty user or item id", inter_path, line, on_bad_row, report)
            continue
        try:
            when = (
                parse_float(row[time_field], "timestamp", inter_path, line) if use_time else float(position)
            )
        except DataError as err:
            bad_row(err.problem, inter_path, line, on_bad_row, report)
            continue
        users.append(user)
        items.append(item)
        times.append(when)
    interactions = RawInteractions.from_lists(users, items, times)

    raw_items = None
    item_path = path / f"{name}.item"
    if item_path.is_file():
        files.append(item_path)
        raw_items = _read_items(
            item_path,
            item_field,
            text_template,
            item_feature_fields,
            image_dir,
            image_pattern,
            on_bad_row,
            report,
        )
    elif image_dir is not None or text_template is not None:
        raise DataError("RecBole item file not found, but item content was asked for", item_path)

    raw_users = None
    user_path = path / f"{name}.user"
    if user_feature_fields:
        require_file(user_path, "RecBole user file")
        files.append(user_path)
        raw_users = _read_users(user_path, user_field, user_feature_fields, on_bad_row, report)

    return RawDataset(
        name=name, interactions=interactions, items=raw_items, users=raw_users, report=report, files=files
    )


def _read_items(
    path: Path,
    item_field: str,
    text_template: str | None,
    feature_fields,
    image_dir,
    image_pattern: str,
    on_bad_row: BadRowPolicy,
    report: PreparationReport,
) -> RawItems:
    rows = read_atomic(path, on_bad_row, report)
    types = next(rows)
    if item_field not in types:
        raise DataError(f"no field {item_field!r} in the header; it has {', '.join(types)}", path, 1)
    if text_template is None:
        text_fields = [f for f, kind in types.items() if kind == "token_seq" and f != item_field]
        text_template = " ".join(f"{{{f}}}" for f in text_fields)
    template = TextTemplate(text_template)
    missing = [f for f in [*template.fields, *feature_fields] if f not in types]
    if missing:
        raise DataError(f"no field(s) {', '.join(missing)} in the header; it has {', '.join(types)}", path, 1)
    seen: set[str] = set()
    ids, texts, images = [], [], []
    features: dict[str, list[FeatureValue]] = {f: [] for f in feature_fields}
    for line, row in rows:
        item = row[item_field].strip()
        if not item:
            bad_row("empty item id", path, line, on_bad_row, report)
            continue
        if item in seen:
            report.add("duplicate_item", example=f"{path.name}:{line}: item {item}")
            continue
        seen.add(item)
        ids.append(item)
        texts.append(template.render(row))
        image: ImageRef | None = None
        if image_dir is not None:
            image = FileImage(Path(image_dir) / image_pattern.format(id=item))
        images.append(image)
        for f in feature_fields:
            features[f].append(_feature(row[f], types[f]))
    return RawItems(ids=ids, texts=texts, images=images, features=features)


def _read_users(path: Path, user_field: str, feature_fields, on_bad_row: BadRowPolicy, report) -> RawUsers:
    rows = read_atomic(path, on_bad_row, report)
    types = next(rows)
    missing = [f for f in [user_field, *feature_fields] if f not in types]
    if missing:
        raise DataError(f"no field(s) {', '.join(missing)} in the header; it has {', '.join(types)}", path, 1)
    ids: list[str] = []
    features: dict[str, list[FeatureValue]] = {f: [] for f in feature_fields}
    seen: set[str] = set()
    for line, row in rows:
        user = row[user_field].strip()
        if not user or user in seen:
            bad_row(f"empty or repeated user id {user!r}", path, line, on_bad_row, report)
            continue
        seen.add(user)
        ids.append(user)
        for f in feature_fields:
            features[f].append(_feature(row[f], types[f]))
    return RawUsers(ids=ids, features=features)
