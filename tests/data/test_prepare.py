import json

import numpy as np
import pytest

from transrec.data.errors import DataError
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import PreparedDataset
from transrec.data.schema import FileImage

from .rawbuild import png, raw_dataset

RED, GREEN, BLUE = (220, 20, 20), (20, 220, 20), (20, 20, 220)


def small_world():
    """3 users x 4 items; u1 has two same-second interactions (i2 then i3 in file order)."""
    items = {
        "i1": ("first item", png(RED)),
        "i2": ("second item", None),
        "i3": ("", png(GREEN)),
        "i4": ("fourth item", png(BLUE)),
    }
    log = [
        ("u1", "i1", 10), ("u1", "i4", 11), ("u1", "i2", 20), ("u1", "i3", 20),
        ("u2", "i4", 5), ("u2", "i1", 6), ("u2", "i2", 7), ("u2", "i3", 8),
        ("u3", "i3", 1), ("u3", "i1", 2), ("u3", "i4", 3), ("u3", "i2", 4),
    ]  # fmt: skip
    return raw_dataset(log, items)


def config(**kw):
    return PrepareConfig(**{"user_k": 1, "item_k": 1, "image_size": 8, **kw})


def test_layout_split_and_tie_rule(tmp_path):
    ds = prepare(small_world(), config(), tmp_path / "p", progress=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 4, 12)
    assert ds.item_ids == ["", "i1", "i2", "i3", "i4"]
    assert ds.user_ids == ["u1", "u2", "u3"]
    # File order breaks the tie of u1's two interactions at t=20: i2 was read first, so i3 is last.
    assert ds.sequence(0).tolist() == [1, 4, 2, 3]
    assert ds.split.test_targets.tolist() == [3, 3, 2]
    assert ds.split.valid_targets.tolist() == [2, 2, 4]
    assert ds.split.train_ends.tolist() == [2, 6, 10]
    assert ds.item_modality.tolist() == [0, 3, 1, 2, 3]
    by_id = prepare(small_world(), config(tie_break="item_id"), tmp_path / "q", progress=False)
    assert by_id.sequence(0).tolist() == [1, 4, 2, 3]  # i2 < i3 by id as well
    reverse = small_world()
    reverse.interactions.items[2], reverse.interactions.items[3] = "i3", "i2"
    assert prepare(reverse, config(), tmp_path / "r", progress=False).sequence(0).tolist() == [1, 4, 3, 2]
    by_id = prepare(reverse, config(tie_break="item_id"), tmp_path / "s", progress=False)
    assert by_id.sequence(0).tolist() == [1, 4, 2, 3]


def test_awkward_rows_are_counted(tmp_path):
    raw = small_world()
    raw.items.ids.append("i5")
    raw.items.texts.append("")
    raw.items.images.append(FileImage(tmp_path / "missing.jpg"))
    raw.items.ids.append("i6")
    raw.items.texts.append("has corrupt image")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    raw.items.images.append(FileImage(corrupt))
    extra = [("u1", "i1", 30), ("u1", "i9", 31), ("u2", "i5", 40), ("u2", "i6", 41), ("u4", "i1", 1)]
    for user, item, t in extra:
        raw.interactions.users = np.append(raw.interactions.users, user)
        raw.interactions.items = np.append(raw.interactions.items, item)
        raw.interactions.timestamps = np.append(raw.interactions.timestamps, t)
    ds = prepare(raw, config(), tmp_path / "p", progress=False)
    counts = ds.report["counts"]
    assert counts["duplicate_interaction"] == 1  # u1-i1 again at t=30
    assert counts["unknown_item"] == 1  # i9
    assert counts["empty_text"] == 2  # i3 and i5
    assert counts["missing_image"] == 1  # i5
    assert counts["corrupt_image"] == 1  # i6 keeps its text
    assert counts["item_without_content"] == 1  # i5: no text, image missing
    assert counts["interaction_of_removed_item"] == 1
    assert counts["short_user"] == 1 and counts["short_user_interaction"] == 1  # u4
    assert "i6" in ds.item_ids and "i5" not in ds.item_ids
    assert ds.item_modality[ds.item_ids.index("i6")] == 1  # text only
    assert ds.report["examples"]["unknown_item"] == ["user u1 item i9"]


def test_k_core_counts(tmp_path):
    raw = small_world()
    raw.items.ids.append("i7")
    raw.items.texts.append("rare item")
    raw.items.images.append(None)
    for user, item, t in [("u4", "i1", 1), ("u4", "i2", 2), ("u4", "i4", 3), ("u4", "i7", 4)]:
        raw.interactions.users = np.append(raw.interactions.users, user)
        raw.interactions.items = np.append(raw.interactions.items, item)
        raw.interactions.timestamps = np.append(raw.interactions.timestamps, t)
    # item_k=2 removes i7 (1 interaction); u4 keeps 3 interactions, enough for user_k=3.
    ds = prepare(raw, config(user_k=3, item_k=2), tmp_path / "a", progress=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (4, 4, 15)
    assert ds.report["counts"]["kcore_item"] == 1 and ds.report["counts"]["kcore_interaction"] == 1
    # item_k=4 also removes i3 (3 interactions); u1, u2, u3 fall to 3 and survive user_k=3.
    ds = prepare(raw, config(user_k=3, item_k=4), tmp_path / "b", progress=False)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (4, 3, 12)
    assert ds.report["counts"]["kcore_item"] == 2 and ds.report["counts"]["kcore_interaction"] == 4
    # user_k=4 then removes every user once i3 is gone, and the items with them: nothing is left.
    with pytest.raises(DataError, match="survives filtering"):
        prepare(raw, config(user_k=4, item_k=4), tmp_path / "c", progress=False)


def test_nothing_left_raises_and_leaves_no_directory(tmp_path):
    with pytest.raises(DataError, match="survives filtering"):
        prepare(small_world(), config(user_k=5), tmp_path / "p", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    prepare(small_world(), config(), tmp_path / "p", progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare(small_world(), config(), tmp_path / "p", progress=False)
    ds = prepare(small_world(), config(user_k=4), tmp_path / "p", overwrite=True, progress=False)
    assert ds.meta["config"]["user_k"] == 4


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_re_preparing_is_byte_identical(tmp_path, image_format):
    a = prepare(small_world(), config(image_format=image_format), tmp_path / "a", progress=False)
    b = prepare(small_world(), config(image_format=image_format), tmp_path / "b", progress=False)
    files_a = sorted(p.relative_to(a.path) for p in a.path.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.path) for p in b.path.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) >= 10
    for name in files_a:
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_images_round_trip(tmp_path, image_format):
    ds = prepare(small_world(), config(image_format=image_format), tmp_path / "p", progress=False)
    store = ds.images
    assert store.has_image(1) and not store.has_image(2) and not store.has_image(0)
    tolerance = 0 if image_format == "raw" else 12
    assert np.abs(store[1].astype(int) - RED).max() <= tolerance
    assert np.abs(store[4].astype(int) - BLUE).max() <= tolerance
    assert store[2].shape == (8, 8, 3) and store[2].max() == 0
    assert store.batch([3, 1]).shape == (2, 8, 8, 3)


def test_tokens_cached_and_empty_text_is_padding(tmp_path):
    ds = prepare(small_world(), config(max_text_tokens=6), tmp_path / "p", progress=False)
    assert ds.text_tokens.shape == (5, 6)
    assert ds.text_lengths.tolist() == [0, 4, 4, 0, 4]  # [CLS] w w [SEP]; i3 has no text
    assert (ds.text_tokens[3] == 0).all() and ds.text_tokens[1, 0] == 1
    assert ds.meta["tokenizer"]["name"] == "hash"


def test_modality_policies(tmp_path):
    text = prepare(small_world(), config(modality="text"), tmp_path / "t", progress=False)
    # i3 has only an image, so text-only removes it and its interactions.
    assert "i3" not in text.item_ids and set(text.item_modality[1:]) == {1}
    image = prepare(small_world(), config(modality="image"), tmp_path / "i", progress=False)
    assert "i2" not in image.item_ids and set(image.item_modality[1:]) == {2}
    all_image = prepare(
        small_world(), config(modality="mom", mom_image_fraction=1.0), tmp_path / "m", progress=False
    )
    assert all_image.item_modality.tolist() == [0, 2, 1, 2, 2]
    all_text = prepare(
        small_world(), config(modality="mom", mom_image_fraction=0.0), tmp_path / "n", progress=False
    )
    assert all_text.item_modality.tolist() == [0, 1, 1, 2, 1]
    assert all_text.report["counts"]["modality_dropped"] == 2


def test_truncation_keeps_the_most_recent(tmp_path):
    ds = prepare(small_world(), config(max_seq_len=3), tmp_path / "p", progress=False)
    assert ds.sequence(0).tolist() == [4, 2, 3]
    assert ds.report["counts"]["truncated_interaction"] == 3


def test_meta_records_parameters_and_reopens(tmp_path):
    ds = prepare(small_world(), config(), tmp_path / "p", source={"format": "test"}, progress=False)
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["config"]["user_k"] == 1 and meta["source"]["format"] == "test"
    assert meta["counts"]["items_text_only"] == 1 and meta["counts"]["items_image_only"] == 1
    assert "file order" in meta["tie_rule"]
    again = PreparedDataset(tmp_path / "p")
    assert again.n_interactions == ds.n_interactions == 12


def test_id_only_data_needs_require_content_false(tmp_path):
    raw = raw_dataset([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)], items=None)
    with pytest.raises(DataError, match="require_content=false"):
        prepare(raw, config(), tmp_path / "p", progress=False)
    ds = prepare(raw, config(require_content=False, tokenizer="none"), tmp_path / "p", progress=False)
    assert ds.item_ids == ["", "a", "b", "c"] and ds.text_tokens is None and ds.images is None
