from datetime import datetime, timezone

import pytest

from transrec.data.errors import DataError
from transrec.data.loaders import load_raw
from transrec.data.loaders.hm import article_id
from transrec.data.schema import FileImage

from .conftest import AWKWARD, prepare_counts, write_images

C1 = "000058a12d5b43e67d225668fa1f8d618c13dc232df0cad8ffe7ad4a1091e318"
C2 = "00007d2de826758b65a93dd24ce629ed66842531df6699338c5570910a014cc2"


def day(d: int) -> float:
    return datetime(2018, 9, d, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def hm(fixture_copy):
    folder = fixture_copy("hm")
    images = ["010/0108775015.jpg", "010/0108775044.jpg", "011/0111565001.jpg"]
    write_images(folder / "images", images, corrupt=["011/0112679048.jpg"])
    return folder  # 011/0110065001.jpg is missing


def test_article_ids_are_normalised():
    assert article_id("108775015") == "0108775015"
    assert article_id(" 0108775015 ") == "0108775015"
    assert article_id("10877501x") is None
    assert article_id("") is None


def test_transactions(hm):
    raw = load_raw("hm", hm, on_bad_row="skip")
    inter = raw.interactions
    assert len(inter) == 12
    assert inter.users[:4].tolist() == [C1, C1, C1, C2]
    assert inter.items[:3].tolist() == ["0108775015", "0108775044", "0110065001"]  # second had no leading 0
    assert inter.timestamps[:4].tolist() == [day(20), day(20), day(21), day(21)]
    assert inter.items[-1] == "0112679048" and inter.timestamps[-1] == day(24)
    assert raw.report.count("malformed_row") == 1


def test_articles(hm):
    raw = load_raw("hm", hm, item_features=("product_type_name", "colour_group_name"), on_bad_row="skip")
    items = raw.items
    assert items.ids == ["0108775015", "0108775044", "0110065001", "0111565001", "0112679048"]
    assert items.texts == [
        "Strap top. Jersey top with narrow shoulder straps.",
        "Strap top. Jersey top with narrow shoulder straps, in white.",
        "OP T-shirt (Idro). Microfibre T-shirt bra with underwired, moulded, lightly padded cups.",
        "",
        "Leona Push Up Jumper. Jumper in a soft knit.",
    ]
    assert items.features["product_type_name"] == [
        "Vest top",
        "Vest top",
        "Bra",
        "Underwear Tights",
        "Sweater",
    ]
    assert items.features["colour_group_name"][4] == "Dark Green"
    assert items.images[2] == FileImage(hm / "images" / "011" / "0110065001.jpg")
    assert raw.report.count("duplicate_item") == 1  # 108775044 is 0108775044 again


def test_text_template_and_user_features(hm):
    raw = load_raw(
        "hm", hm, text_template="{prod_name} ({colour_group_name})", user_features=("age",), on_bad_row="skip"
    )
    assert raw.items.texts[0] == "Strap top (Black)"
    assert raw.users.ids[0] == C1
    assert raw.users.features["age"] == ["49", "25", "24", None]


def test_malformed_row_names_file_and_line(hm):
    with pytest.raises(DataError, match=r"transactions_train\.csv, line 7: time '2018-09-2x'"):
        load_raw("hm", hm)


def test_no_images_folder(fixture_copy):
    raw = load_raw("hm", fixture_copy("hm"), on_bad_row="skip")
    assert raw.items.images == [None] * 5
    assert "no image folder: items are text only" in raw.notes


def test_prepare_counts_each_awkward_row(hm, tmp_path):
    sizes, counts = prepare_counts(load_raw("hm", hm, on_bad_row="skip"), tmp_path / "prepared")
    assert counts == AWKWARD
    assert sizes == (3, 5, 9)
