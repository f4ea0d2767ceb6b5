"""H&M Personalized Fashion Recommendations (Kaggle): transactions, articles and article images.

The competition folder::

    transactions_train.csv   comma separated, header; one purchase per row, grouped by day
        t_dat,customer_id,article_id,price,sales_channel_id
        2018-09-20,000058a12d5b43e67d225668fa1f8d618c13dc232df0cad8ffe7ad4a1091e318,0663713001,0.0508,2
    articles.csv             comma separated, header; 25 columns, among them
        article_id,product_code,prod_name,product_type_no,product_type_name,...,colour_group_name,...,detail_desc
        0108775015,0108775,Strap top,253,Vest top,...,Black,...,Jersey top with narrow shoulder straps.
    customers.csv            customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code
    images/010/0108775015.jpg   one JPEG per article, in a folder named by the id's first 3 digits

Article ids are 10 digits with a leading zero; a file saved by a spreadsheet or pandas may have lost it
(``108775015``), so every id is normalised by left-padding with zeros to 10 digits. An id that is not
all digits is a malformed row. ``t_dat`` has no time of day: the purchases of one day share its
midnight (UTC) and keep their file order (the tie rule). Price and sales channel are not read.

Options:
    text_template: the item text from ``articles.csv`` columns (``common.TextTemplate``); default
        ``"{prod_name}. {detail_desc}"``.
    item_features: ``articles.csv`` columns kept as item side features (one category each), e.g.
        ``("product_type_name", "colour_group_name")``; default none.
    user_features: ``customers.csv`` columns kept as user side features, e.g. ``("age",
        "club_member_status")``; default none (``customers.csv`` is then not read).
    image_dir: the images folder; relative paths are taken inside the dataset folder. Default:
        ``<folder>/images`` when it exists, else no images. A folder that is given but absent is an error.
    image_pattern: the image path inside ``image_dir``, formatted with ``id`` (10 digits) and ``prefix``
        (its first 3 digits); default ``{prefix}/{id}.jpg``.
    on_bad_row: "error" (default) or "skip".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transrec.data.errors import DataError
from transrec.data.loaders import LOADERS
from transrec.data.loaders.common import (
    BadRowPolicy,
    TextTemplate,
    bad_row,
    check_policy,
    header_index,
    parse_datetime,
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

ARTICLE_ID_DIGITS = 10


def article_id(value: str) -> str | None:
    """The 10-digit article id (``108775015`` -> ``0108775015``), or None when it is not a number."""
    value = value.strip()
    if not value.isdigit():
        return None
    return value.zfill(ARTICLE_ID_DIGITS)


@LOADERS.register("hm")
def load_hm(
    path: Path,
    *,
    text_template: str = "{prod_name}. {detail_desc}",
    item_features: Sequence[str] = (),
    user_features: Sequence[str] = (),
    image_dir: str | Path | None = None,
    image_pattern: str = "{prefix}/{id}.jpg",
    on_bad_row: BadRowPolicy = "error",
) -> RawDataset:
    check_policy(on_bad_row)
    path = Path(path)
    report = PreparationReport()
    transactions_path = require_file(path / "transactions_train.csv", "H&M transactions file")
    articles_path = require_file(path / "articles.csv", "H&M articles file")
    files = [transactions_path, articles_path]
    interactions = _read_transactions(transactions_path, on_bad_row, report)

    if image_dir is None:
        folder: Path | None = path / "images" if (path / "images").is_dir() else None
    else:
        folder = path / image_dir
        if not folder.is_dir():
            raise DataError("image folder not found (image_dir)", folder)
    items = _read_articles(
        articles_path, TextTemplate(text_template), item_features, folder, image_pattern, on_bad_row, report
    )
    users = None
    if user_features:
        customers_path = require_file(path / "customers.csv", "H&M customers file")
        files.append(customers_path)
        users = _read_customers(customers_path, user_features, on_bad_row, report)
    notes = ["t_dat is a day: purchases of one day share its midnight and keep their file order"]
    if folder is None:
        notes.append("no image folder: items are text only")
    return RawDataset(
        name=path.name,
        interactions=interactions,
        items=items,
        users=users,
        report=report,
        files=files,
        notes=notes,
    )


def _rows_with_header(path: Path, wanted: dict[str, str]):
    rows = read_rows(path, delimiter=",", encoding="utf-8-sig")
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataError("the file is empty (expected a header row)", path, 1) from None
    return len(header), header_index(header, wanted, path), rows


def _read_transactions(path: Path, on_bad_row: BadRowPolicy, report: PreparationReport) -> RawInteractions:
    width, index, rows = _rows_with_header(
        path, {"day": "t_dat", "user": "customer_id", "item": "article_id"}
    )
    users, items, times = [], [], []
    for line, fields in rows:
        if len(fields) != width:
            bad_row(
                f"expected {width} comma-separated fields, found {len(fields)}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        user, item = fields[index["user"]].strip(), article_id(fields[index["item"]])
        if not user or item is None:
            bad_row(
                f"empty customer id or bad article id {fields[index['item']]!r}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        try:
            when = parse_datetime(fields[index["day"]], ("%Y-%m-%d",), path, line)
        except DataError as err:
            bad_row(err.problem, path, line, on_bad_row, report)
            continue
        users.append(user)
        items.append(item)
        times.append(when)
    return RawInteractions.from_lists(users, items, times)


def _read_articles(
    path: Path,
    template: TextTemplate,
    feature_columns: Sequence[str],
    folder: Path | None,
    image_pattern: str,
    on_bad_row: BadRowPolicy,
    report: PreparationReport,
) -> RawItems:
    columns = dict.fromkeys(["article_id", *template.fields, *feature_columns])
    width, index, rows = _rows_with_header(path, {c: c for c in columns})
    ids: list[str] = []
    texts: list[str] = []
    images: list[ImageRef | None] = []
    features: dict[str, list[FeatureValue]] = {c: [] for c in feature_columns}
    seen: set[str] = set()
    for line, fields in rows:
        if len(fields) != width:
            bad_row(
                f"expected {width} comma-separated fields, found {len(fields)}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        item = article_id(fields[index["article_id"]])
        if item is None:
            bad_row(
                f"article id {fields[index['article_id']]!r} is not a number", path, line, on_bad_row, report
            )
            continue
        if item in seen:
            report.add("duplicate_item", example=f"{path.name}:{line}: article {item}")
            continue
        seen.add(item)
        ids.append(item)
        texts.append(template.render({c: fields[index[c]] for c in template.fields}))
        image = None if folder is None else FileImage(folder / image_pattern.format(id=item, prefix=item[:3]))
        images.append(image)
        for column in feature_columns:
            features[column].append(fields[index[column]].strip() or None)
    return RawItems(ids=ids, texts=texts, images=images, features=features)


def _read_customers(
    path: Path, feature_columns: Sequence[str], on_bad_row: BadRowPolicy, report: PreparationReport
) -> RawUsers:
    width, index, rows = _rows_with_header(
        path, {c: c for c in dict.fromkeys(["customer_id", *feature_columns])}
    )
    ids: list[str] = []
    features: dict[str, list[FeatureValue]] = {c: [] for c in feature_columns}
    seen: set[str] = set()
    for line, fields in rows:
        if len(fields) != width:
            bad_row(
                f"expected {width} comma-separated fields, found {len(fields)}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        user = fields[index["customer_id"]].strip()
        if not user or user in seen:
            bad_row(f"empty or repeated customer id {user!r}", path, line, on_bad_row, report)
            continue
        seen.add(user)
        ids.append(user)
        for column in feature_columns:
            features[column].append(fields[index[column]].strip() or None)
    return RawUsers(ids=ids, features=features)
