import pickle

import lmdb
import pytest

from transrec.data.errors import DataError
from transrec.data.loaders import load_raw
from transrec.data.loaders.morec import LmdbImage
from transrec.data.schema import FileImage

from .conftest import AWKWARD, jpeg_bytes, prepare_counts, write_images


@pytest.fixture
def mini(fixture_copy):
    return fixture_copy("morec") / "mini"


def write_lmdb(path, records):
    env = lmdb.open(str(path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        for key, value in records.items():
            txn.put(key.encode("utf-8"), value)
    env.close()


def test_sequences_become_positions(mini):
    raw = load_raw("morec", mini, on_bad_row="skip")
    inter = raw.interactions
    assert inter.users.tolist() == ["u1"] * 4 + ["u2"] * 4 + ["u3"] * 4 + ["u4"]
    assert inter.items.tolist() == [
        "i1",
        "i2",
        "i3",
        "i4",
        "i2",
        "i3",
        "i3",
        "i5",
        "i1",
        "i9",
        "i4",
        "i5",
        "i6",
    ]
    assert inter.timestamps.tolist() == [float(i) for i in range(13)]
    assert raw.items.ids == ["i1", "i2", "i3", "i4", "i5", "i6"]
    assert raw.items.texts == [
        "Cat sleeping",
        "Cooking at home",
        'Dance "class"',
        "",
        "Music video",
        "Movie review",
    ]
    assert raw.items.images == [None] * 6  # no images/ folder, no LMDB
    assert raw.report.count("malformed_row") == 1
    assert raw.report.count("duplicate_item") == 1


def test_title_and_abstract(mini):
    raw = load_raw("morec", mini, text="title+abstract", on_bad_row="skip")
    assert raw.items.texts[0] == "Cat sleeping A cat sleeps on a sofa."
    assert raw.items.texts[1] == "Cooking at home"
    assert raw.items.texts[3] == ""


def test_malformed_row_names_file_and_line(mini):
    with pytest.raises(DataError, match=r"mini_users\.tsv, line 4: expected 2 tab-separated fields"):
        load_raw("morec", mini)


def test_images_from_a_folder(mini):
    write_images(mini / "images", ["i1.jpg"])
    raw = load_raw("morec", mini, on_bad_row="skip")
    assert raw.items.images[0] == FileImage(mini / "images" / "i1.jpg")
    assert raw.items.images[5] == FileImage(mini / "images" / "i6.jpg")


def test_images_from_an_lmdb_share_one_reader(mini):
    good = jpeg_bytes()
    write_lmdb(mini / "images.lmdb", {"i1": good, "i2": good, "i4": good, "i5": good, "i6": b"junk"})
    raw = load_raw("morec", mini, image_lmdb="images.lmdb", on_bad_row="skip")
    first, missing = raw.items.images[0], raw.items.images[2]
    assert isinstance(first, LmdbImage) and first.key == "i1"
    assert first.reader._env is None  # the load-time probe closed it; opened again on first read
    assert first.read_bytes() == good
    assert raw.items.images[5].read_bytes() == b"junk"
    with pytest.raises(FileNotFoundError):
        missing.read_bytes()
    assert all(ref.reader is first.reader for ref in raw.items.images)
    env = first.reader._env
    assert env is not None and raw.items.images[1].reader._env is env  # opened once
    # A copy sent to a worker process does not carry the open environment; it reopens it lazily there.
    copy = pickle.loads(pickle.dumps(first))
    assert copy.reader._env is None
    with pytest.raises(DataError, match="another reader of it is open in this process"):
        copy.read_bytes()  # py-lmdb: one open environment per path and process
    first.reader.close()
    assert copy.read_bytes() == good
    copy.reader.close()


def test_pickled_lmdb_is_refused(mini):
    write_lmdb(
        mini / "pickled.lmdb", {"i1": pickle.dumps({"image": b"\x00" * 12}), "__len__": pickle.dumps(1)}
    )
    with pytest.raises(DataError, match=r"is a Python pickle .* does not load"):
        load_raw("morec", mini, image_lmdb="pickled.lmdb", on_bad_row="skip")


def test_image_options_conflict_and_missing(mini):
    with pytest.raises(ValueError, match="not both"):
        load_raw("morec", mini, image_dir="images", image_lmdb="x.lmdb")
    with pytest.raises(DataError, match="image LMDB not found"):
        load_raw("morec", mini, image_lmdb="absent.lmdb", on_bad_row="skip")


@pytest.mark.parametrize("store", ["folder", "lmdb"])
def test_prepare_counts_each_awkward_row(mini, tmp_path, store):
    valid, options = ["i1", "i2", "i4", "i5"], {}
    if store == "folder":
        write_images(mini / "images", [f"{i}.jpg" for i in valid], corrupt=["i6.jpg"])
    else:
        write_lmdb(mini / "img.lmdb", {**{i: jpeg_bytes() for i in valid}, "i6": b"junk"})
        options["image_lmdb"] = "img.lmdb"
    sizes, counts = prepare_counts(
        load_raw("morec", mini, on_bad_row="skip", **options), tmp_path / "prepared"
    )
    assert counts == {**AWKWARD, "unused_item": 1}  # i6 (corrupt) is only seen by the short user u4
    assert sizes == (3, 5, 10)
