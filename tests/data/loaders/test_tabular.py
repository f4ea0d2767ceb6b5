from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transrec.data.errors import DataError
from transrec.data.loaders import load_raw
from transrec.data.schema import BytesImage, FileImage

from .conftest import AWKWARD, jpeg_bytes, prepare_counts, write_images

COLUMNS = {"user": "user", "item": "movie", "time": "when", "item_id": "movie_id", "image": "poster"}
OPTIONS = {"interactions": "interactions.csv", "items": "movies.tsv", "time_format": "%Y-%m-%d %H:%M:%S"}


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def folder(fixture_copy):
    folder = fixture_copy("tabular")
    write_images(folder / "posters", ["m1.jpg", "m2.jpg", "m4.jpg"], corrupt=["m5.jpg"])
    return folder  # posters/m3.jpg is missing


def test_csv_interactions_and_tsv_items(folder):
    columns = {**COLUMNS, "text": "{title}. {plot}"}
    raw = load_raw("tabular", folder, columns=columns, item_features=("genre",), on_bad_row="skip", **OPTIONS)
    inter = raw.interactions
    assert inter.users.tolist() == ["u1"] * 3 + ["u2"] * 4 + ["u3"] * 4 + ["u4"]
    assert inter.items.tolist() == ["m1", "m2", "m3", "m2", "m2", "m4", "m5", "m9", "m4", "m1", "m3", "m5"]
    assert inter.timestamps[:2].tolist() == [utc(2021, 3, 1, 10), utc(2021, 3, 1, 11)]
    assert raw.items.ids == ["m1", "m2", "m3", "m4", "m5"]
    assert raw.items.texts == [
        "Heat. A group of bank robbers meets a detective.",
        "Alien. A crew meets a creature.",
        "Up. An old man flies his house.",
        "",
        "Her. A man falls for an AI.",
    ]
    assert raw.items.images[2] == FileImage(folder / "posters" / "m3.jpg")
    assert raw.items.features["genre"] == ["Crime", "Horror", "Animation", None, "Romance"]
    assert raw.report.count("malformed_row") == 1
    assert raw.report.count("duplicate_item") == 1


def test_text_as_a_list_of_columns_and_users(folder):
    columns = {**COLUMNS, "text": ["title", "genre"], "image": None, "user_id": "user_id"}
    raw = load_raw(
        "tabular",
        folder,
        columns=columns,
        users="users.csv",
        user_features=("age", "occupation"),
        on_bad_row="skip",
        **OPTIONS,
    )
    assert raw.items.texts[:2] == ["Heat Crime", "Alien Horror"]
    assert raw.items.images == [None] * 5
    assert raw.users.ids == ["u1", "u2", "u3", "u4"]
    assert raw.users.features["age"] == ["24", "53", "23", None]


def test_malformed_row_names_file_and_line(folder):
    with pytest.raises(DataError, match=r"interactions\.csv, line 12: time '' matches none of the formats"):
        load_raw("tabular", folder, columns=COLUMNS, **OPTIONS)


def test_interactions_file_as_path_without_time(folder):
    raw = load_raw(
        "tabular", folder / "interactions.csv", columns={"user": "user", "item": "movie", "time": None}
    )
    assert raw.name == "interactions"
    assert raw.interactions.timestamps.tolist() == [float(i) for i in range(13)]
    assert raw.items is None


def test_parquet_with_image_bytes(tmp_path):
    cover = jpeg_bytes()
    moments = [datetime(2021, 3, 1, 10), datetime(2021, 3, 2, 10), datetime(2021, 3, 3, 10)]
    pq.write_table(
        pa.table({"uid": [7, 7, 8], "iid": [1, 2, 1], "ts": pa.array(moments, pa.timestamp("s"))}),
        tmp_path / "log.parquet",
    )
    items = {"iid": [1, 2], "name": ["One", None], "img": [cover, None], "tag": ["a", "b"]}
    pq.write_table(pa.table(items), tmp_path / "items.parquet")
    raw = load_raw(
        "tabular",
        tmp_path,
        interactions="log.parquet",
        items="items.parquet",
        columns={"user": "uid", "item": "iid", "time": "ts", "text": "name", "image": "img"},
        item_features=("tag",),
    )
    assert raw.interactions.users.tolist() == ["7", "7", "8"]
    assert raw.interactions.items.tolist() == ["1", "2", "1"]
    assert raw.interactions.timestamps.tolist() == [
        utc(2021, 3, 1, 10),
        utc(2021, 3, 2, 10),
        utc(2021, 3, 3, 10),
    ]
    assert raw.items.ids == ["1", "2"]
    assert raw.items.texts == ["One", ""]
    assert raw.items.images == [BytesImage(cover, name="items.parquet:1"), None]
    assert raw.items.features["tag"] == ["a", "b"]


def test_parquet_missing_column_and_null_id(tmp_path):
    pq.write_table(
        pa.table({"user_id": ["u1", None], "item_id": ["i1", "i2"], "timestamp": [1.0, 2.0]}),
        tmp_path / "x.pq",
    )
    with pytest.raises(DataError, match=r"x\.pq, line 2: empty user or item id"):
        load_raw("tabular", tmp_path / "x.pq")
    with pytest.raises(DataError, match=r"no column 'uid' \(for user\); the file has: user_id, item_id"):
        load_raw("tabular", tmp_path / "x.pq", columns={"user": "uid"})


def test_unknown_role_and_extension(folder):
    with pytest.raises(ValueError, match="unknown column roles"):
        load_raw("tabular", folder, columns={"usr": "user"}, **OPTIONS)
    (folder / "log.dat").write_text("user_id::item_id\n", encoding="utf-8")
    with pytest.raises(DataError, match="cannot tell the delimiter"):
        load_raw("tabular", folder / "log.dat")


def test_prepare_counts_each_awkward_row(folder, tmp_path):
    columns = {**COLUMNS, "text": "{title}. {plot}"}
    raw = load_raw("tabular", folder, columns=columns, on_bad_row="skip", **OPTIONS)
    sizes, counts = prepare_counts(raw, tmp_path / "prepared")
    assert counts == AWKWARD
    assert sizes == (3, 5, 9)
