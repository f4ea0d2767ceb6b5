import pytest

from transrec.data.errors import DataError
from transrec.data.loaders import load_raw
from transrec.data.schema import FileImage

from .conftest import AWKWARD, prepare_counts, write_images


@pytest.fixture
def bili(fixture_copy):
    folder = fixture_copy("ninerec") / "Bili_Mini"
    write_images(folder / "images", ["101.jpg", "102.jpg", "104.jpg", "105.jpg"], corrupt=["106.jpg"])
    return folder  # 103.jpg is missing


def test_reads_pairs_by_header_names_and_items(bili):
    raw = load_raw("ninerec", bili, on_bad_row="skip")
    inter = raw.interactions
    assert raw.name == "Bili_Mini"
    assert inter.users.tolist()[:5] == ["1583", "1583", "1583", "1583", "2207"]
    assert inter.items.tolist() == [
        "101", "102", "103", "104", "101", "102", "102", "105", "103", "999", "104", "105", "106"
    ]  # fmt: skip
    assert inter.timestamps[:2].tolist() == [1633017538.0, 1633017600.0]
    assert raw.items.ids == ["101", "102", "103", "104", "105", "106"]
    assert raw.items.texts == [
        "Cat sleeping on the sofa",
        "Cooking dinner at home",
        "Street dance, lesson one",
        "",
        "Piano performance",
        "Movie commentary",
    ]
    assert raw.items.images[2] == FileImage(bili / "images" / "103.jpg")  # recorded though absent
    assert raw.report.count("malformed_row") == 1
    assert raw.report.count("duplicate_item") == 1
    assert [f.name for f in raw.files] == ["Bili_Mini_pair.csv", "Bili_Mini_item.csv"]


def test_malformed_row_names_file_and_line(bili):
    with pytest.raises(DataError, match=r"Bili_Mini_pair\.csv, line 9: timestamp '16330x8000'") as info:
        load_raw("ninerec", bili)
    assert info.value.line == 9


def test_chinese_or_both_titles(bili):
    zh = load_raw("ninerec", bili, text_columns=("title_zh",), on_bad_row="skip")
    assert zh.items.texts[:2] == ["猫咪在沙发上睡觉", "在家做晚饭"]
    both = load_raw("ninerec", bili, text_columns=("title_zh", "title_en"), on_bad_row="skip")
    assert both.items.texts[0] == "猫咪在沙发上睡觉 Cat sleeping on the sofa"
    assert both.items.texts[3] == ""


def test_headerless_microlens_style_in_milliseconds(tmp_path):
    (tmp_path / "ml_pairs.csv").write_text("7,42,1700000000123\n7,43,1700000000500\n", encoding="utf-8")
    (tmp_path / "ml_titles.csv").write_text("item,title\n42,A cover\n43,Another\n", encoding="utf-8")
    raw = load_raw(
        "ninerec",
        tmp_path,
        pair_file="ml_pairs.csv",
        item_file="ml_titles.csv",
        pair_header=False,
        pair_columns=("user", "item", "timestamp"),
        user_column="user",
        item_column="item",
        time_unit="ms",
        item_header=True,
        item_id_column="item",
        text_columns=("title",),
    )
    assert raw.interactions.users.tolist() == ["7", "7"]
    assert raw.interactions.items.tolist() == ["42", "43"]
    assert raw.interactions.timestamps.tolist() == [1700000000.123, 1700000000.5]
    assert raw.items.texts == ["A cover", "Another"]
    assert raw.items.images == [None, None]  # no images/ folder


def test_file_order_when_no_time_column(bili):
    raw = load_raw("ninerec", bili, time_column=None)
    # The timestamp column is not read, so the row with the bad timestamp is no longer malformed.
    assert raw.interactions.timestamps.tolist() == [float(i) for i in range(14)]
    assert raw.interactions.users[7] == "5560"
    assert raw.notes[0].startswith("no time column")


def test_image_dir_option(bili):
    (bili / "covers").mkdir()
    raw = load_raw("ninerec", bili, image_dir="covers", image_pattern="{id}.png", on_bad_row="skip")
    assert raw.items.images[0] == FileImage(bili / "covers" / "101.png")
    with pytest.raises(DataError, match="image folder not found"):
        load_raw("ninerec", bili, image_dir="nowhere", on_bad_row="skip")


def test_missing_column_lists_the_header(bili):
    with pytest.raises(DataError, match=r"no column 'user'.*item_id, user_id, timestamp"):
        load_raw("ninerec", bili, user_column="user")


def test_prepare_counts_each_awkward_row(bili, tmp_path):
    sizes, counts = prepare_counts(load_raw("ninerec", bili, on_bad_row="skip"), tmp_path / "prepared")
    # Item 106 (corrupt cover) is only seen by the short user 4021, so it ends up unused.
    assert counts == {**AWKWARD, "unused_item": 1}
    assert sizes == (3, 5, 10)


def test_byte_order_mark_is_ignored(bili):
    pair = bili / "Bili_Mini_pair.csv"
    pair.write_bytes(b"\xef\xbb\xbf" + pair.read_bytes())
    raw = load_raw("ninerec", bili, on_bad_row="skip")
    assert raw.interactions.items[0] == "101"
