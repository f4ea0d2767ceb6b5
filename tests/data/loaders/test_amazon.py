import gzip

import pytest

from transrec.data.errors import DataError
from transrec.data.loaders import load_raw
from transrec.data.loaders.amazon import parse_record
from transrec.data.schema import FileImage

from .conftest import AWKWARD, prepare_counts, write_images


@pytest.fixture
def toys(fixture_copy):
    folder = fixture_copy("amazon") / "Toys"
    write_images(folder / "images", ["B001.jpg", "B003.jpg", "B004.jpg"], corrupt=["B005.jpg"])
    return folder  # B002.jpg is missing


def test_reviews(toys):
    raw = load_raw("amazon", toys, on_bad_row="skip")
    inter = raw.interactions
    assert raw.name == "Toys"
    assert inter.users.tolist() == ["A1KLRMWW2FWPL4"] * 3 + ["A2G5TCU2WDFZ65"] * 4 + [
        "A3OXHLG6DIBRW8"
    ] * 4 + ["AZZ1Q8Y5UO5NY"]
    assert inter.items.tolist() == [
        "B001", "B002", "B003", "B001", "B001", "B004", "B005", "B999", "B004", "B003", "B002", "B005"
    ]  # fmt: skip
    assert inter.timestamps[:3].tolist() == [1297468800.0, 1297555200.0, 1297641600.0]
    assert raw.report.count("malformed_row") == 1


def test_metadata(toys):
    raw = load_raw("amazon", toys, image_dir="images", item_features=("category", "brand"), on_bad_row="skip")
    items = raw.items
    assert items.ids == ["B001", "B002", "B003", "B004", "B005"]
    # HTML entities decoded; the second line is a Python dict literal, not JSON.
    assert items.texts == ["Bear & Friends Puzzle", "Toy Car", "", "Rainbow Kite", "Robot à pile"]
    assert items.features["category"][:3] == [["Toys & Games", "Puzzles"], ["Toys & Games", "Vehicles"], None]
    assert items.features["brand"] == ["Melissa & Doug", "Hot Wheels", None, None, None]
    assert items.images[1] == FileImage(toys / "images" / "B002.jpg")
    assert raw.report.count("duplicate_item") == 1


def test_text_template_strips_tags(toys):
    raw = load_raw("amazon", toys, text_template="{title}. {description}", on_bad_row="skip")
    assert raw.items.texts[0] == "Bear & Friends Puzzle. A 24-piece floor puzzle. Ages 3 & up."
    assert raw.items.texts[1] == "Toy Car. A red die-cast car."
    assert raw.items.images == [None] * 5  # no image_dir: the loader never downloads


def test_gzipped_files_and_min_rating(toys):
    for name in ("Toys.json", "meta_Toys.json"):
        (toys / f"{name}.gz").write_bytes(gzip.compress((toys / name).read_bytes()))
        (toys / name).unlink()
    raw = load_raw("amazon", toys, min_rating=3, on_bad_row="skip")
    assert [f.name for f in raw.files] == ["Toys.json.gz", "meta_Toys.json.gz"]
    assert len(raw.interactions) == 10
    assert "B999" not in raw.interactions.items.tolist()
    assert raw.report.count("negative_feedback") == 2
    assert raw.items.texts[0] == "Bear & Friends Puzzle"


def test_malformed_row_names_file_and_line(toys):
    with pytest.raises(DataError, match=r"Toys\.json, line 7: not a JSON object"):
        load_raw("amazon", toys)


def test_parse_record_never_evaluates_code():
    assert parse_record("{'asin': 'B1', 'n': (1, 2)}") == {"asin": "B1", "n": (1, 2)}
    assert parse_record("__import__('os').getcwd()") is None
    assert parse_record("[1, 2]") is None
    assert parse_record('{"asin": "B1"') is None


def test_missing_metadata_file(toys):
    (toys / "meta_Toys.json").unlink()
    with pytest.raises(DataError, match="Amazon metadata file not found"):
        load_raw("amazon", toys)


def test_prepare_counts_each_awkward_row(toys, tmp_path):
    raw = load_raw("amazon", toys, image_dir="images", on_bad_row="skip")
    sizes, counts = prepare_counts(raw, tmp_path / "prepared")
    assert counts == AWKWARD
    assert sizes == (3, 5, 9)
