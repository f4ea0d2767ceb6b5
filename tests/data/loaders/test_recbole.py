import pytest

from transrec.data.errors import DataError
from transrec.data.loaders import load_raw
from transrec.data.schema import FileImage

from .conftest import AWKWARD, prepare_counts, write_images


@pytest.fixture
def mini(fixture_copy):
    folder = fixture_copy("recbole") / "mini"
    write_images(folder / "covers", ["242.jpg", "302.jpg", "51.jpg"], corrupt=["346.jpg"])
    return folder  # 377.jpg is missing


def test_interactions(mini):
    raw = load_raw("recbole", mini, on_bad_row="skip")
    inter = raw.interactions
    assert inter.users.tolist() == ["196"] * 3 + ["186"] * 4 + ["22"] * 4 + ["244"]
    assert inter.items.tolist() == [
        "242",
        "302",
        "377",
        "302",
        "302",
        "51",
        "346",
        "999",
        "377",
        "51",
        "346",
        "346",
    ]
    assert inter.timestamps[:3].tolist() == [881250949.0, 881250950.0, 881250951.0]
    assert raw.report.count("malformed_row") == 1
    assert [f.name for f in raw.files] == ["mini.inter", "mini.item"]


def test_items_default_text_and_template(mini):
    raw = load_raw("recbole", mini, image_dir=mini / "covers", on_bad_row="skip")
    items = raw.items
    assert items.ids == ["242", "302", "377", "51", "346"]
    # Default text: the token_seq fields (movie_title, class) joined.
    assert items.texts == [
        "Kolya Comedy",
        "L.A. Confidential Crime Film-Noir Mystery Thriller",
        "Heavyweights Children Comedy",
        "",
        "Jackie Brown Crime Drama",
    ]
    assert items.images[2] == FileImage(mini / "covers" / "377.jpg")
    assert raw.report.count("duplicate_item") == 1
    templated = load_raw("recbole", mini, text_template="{movie_title} ({release_year})", on_bad_row="skip")
    assert templated.items.texts[0] == "Kolya (1996)"


def test_side_features(mini):
    raw = load_raw(
        "recbole",
        mini,
        item_feature_fields=("class",),
        user_feature_fields=("gender", "occupation"),
        on_bad_row="skip",
    )
    assert raw.items.features["class"][1] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert raw.items.features["class"][3] is None
    assert raw.users.ids == ["196", "186", "22", "244"]
    assert raw.users.features["occupation"] == ["writer", "executive", "writer", "technician"]


def test_malformed_row_names_file_and_line(mini):
    with pytest.raises(DataError, match=r"mini\.inter, line 11: expected 4 tab-separated fields, found 3"):
        load_raw("recbole", mini)


def test_prepare_counts_each_awkward_row(mini, tmp_path):
    raw = load_raw("recbole", mini, image_dir=mini / "covers", on_bad_row="skip")
    sizes, counts = prepare_counts(raw, tmp_path / "prepared")
    assert counts == AWKWARD
    assert sizes == (3, 5, 9)
