from datetime import datetime, timezone

import pytest

from transrec.data.errors import DataError
from transrec.data.loaders import load_raw

from .conftest import AWKWARD, prepare_counts


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def mind(fixture_copy):
    return fixture_copy("mind")


def test_history_then_clicks_across_splits(mind):
    raw = load_raw("mind", mind, splits=["train", "dev"], on_bad_row="skip")
    inter = raw.interactions
    rows = list(zip(inter.users.tolist(), inter.items.tolist(), inter.timestamps.tolist(), strict=True))
    u1_start, u2_start = utc(2019, 11, 11, 8, 0, 0), utc(2019, 11, 11, 10, 0, 0)
    assert rows == [
        # U1's history is placed before its earliest impression (the third row, 8:00 AM), in listed order.
        ("U1", "N1", u1_start - 2),
        ("U1", "N2", u1_start - 1),
        ("U2", "N1", u2_start - 1),
        # Then the clicks (-1) in file order, first split first.
        ("U1", "N3", utc(2019, 11, 11, 9, 5, 58)),
        ("U2", "N3", u2_start),
        ("U1", "N5", u1_start),
        ("U3", "N9", utc(2019, 11, 12, 13, 15, 0)),
        ("U3", "N2", utc(2019, 11, 12, 13, 15, 0)),
        ("U2", "N3", utc(2019, 11, 13, 9, 0, 0)),
        ("U2", "N6", utc(2019, 11, 15, 10, 22, 32)),
        ("U5", "N4", utc(2019, 11, 15, 11, 0, 0)),
    ]
    assert raw.report.count("negative_feedback") == 2  # N4-0 and N5-0
    assert raw.report.count("unlabeled_impression") == 1  # dev line 3: N6
    assert raw.report.count("malformed_row") == 1  # train line 5: 25 o'clock
    assert raw.report.count("duplicate_item") == 1  # N3 twice in train/news.tsv (N1 in both splits is not)
    assert [f.parent.name + "/" + f.name for f in raw.files] == [
        "train/behaviors.tsv",
        "train/news.tsv",
        "dev/behaviors.tsv",
        "dev/news.tsv",
    ]


def test_news_text_and_features(mind):
    raw = load_raw("mind", mind, splits=["train", "dev"], on_bad_row="skip")
    items = raw.items
    assert items.ids == ["N1", "N2", "N3", "N4", "N5", "N6"]
    assert items.texts == [
        "'Wheel Of Fortune' Guest Delivers Hilarious Answer",
        "",
        'Storm "Ada" hits the coast',
        "Markets rally",
        "The royal wedding",
        "Snow expected tonight",
    ]
    assert items.features["category"] == ["tv", "sports", "news", "finance", "lifestyle", "weather"]
    assert items.features["subcategory"][3] is None
    assert items.images == [None] * 6
    with_abstract = load_raw("mind", mind, splits=["train", "dev"], text="title+abstract", on_bad_row="skip")
    assert with_abstract.items.texts[:3] == [
        "'Wheel Of Fortune' Guest Delivers Hilarious Answer We'd like to solve the puzzle.",
        "Only an abstract here.",
        'Storm "Ada" hits the coast',
    ]


def test_single_folder(mind):
    raw = load_raw("mind", mind / "dev")
    assert raw.interactions.users.tolist() == ["U2", "U1", "U1", "U2", "U5"]
    assert raw.interactions.items.tolist() == ["N1", "N1", "N2", "N6", "N4"]
    assert raw.items.ids == ["N1", "N6"]


def test_malformed_row_names_file_and_line(mind):
    with pytest.raises(DataError, match=r"train/behaviors\.tsv, line 5: time '11/13/2019 25:00:00 PM'"):
        load_raw("mind", mind, splits=["train"])


def test_bad_impression_label(tmp_path):
    (tmp_path / "behaviors.tsv").write_text("1\tU1\t11/11/2019 9:05:58 AM\t\tN1-2\n", encoding="utf-8")
    (tmp_path / "news.tsv").write_text("N1\ta\tb\tT\t\t\t[]\t[]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: impression 'N1-2' is not of the form"):
        load_raw("mind", tmp_path)
    assert len(load_raw("mind", tmp_path, on_bad_row="skip").interactions) == 0


def test_prepare_counts_each_awkward_row(mind, tmp_path):
    raw = load_raw("mind", mind, splits=["train", "dev"], on_bad_row="skip")
    sizes, counts = prepare_counts(raw, tmp_path / "prepared")
    expected = {**AWKWARD, "negative_feedback": 2, "unlabeled_impression": 1}
    del expected["missing_image"], expected["corrupt_image"]  # MIND has no images
    # N2's title is empty and it has no image: removed with its two interactions, which leaves U3 empty.
    expected |= {"item_without_content": 1, "interaction_of_removed_item": 2, "unused_item": 1}
    assert counts == expected
    assert sizes == (2, 4, 6)
