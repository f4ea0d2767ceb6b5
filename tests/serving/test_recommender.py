"""Recommender: answers equal evaluation's full ranking; histories with new content; the popular fallback;
truncation; exclusion; adding and removing items (visible at once, persisted, atomic); bad input; threads."""

import io
import shutil
import struct
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from tests.serving.exports import BuiltExport, build_checkpoint, build_dataset, build_export
from transrec.data.item_content import ItemContent
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.evaluation.model_eval import item_table, user_vectors
from transrec.evaluation.protocol import stage_histories
from transrec.models.recommender import SequentialRecommender
from transrec.serving import (
    ContentError,
    ContentLimits,
    DuplicateItemError,
    InvalidRequestError,
    Recommender,
    RetrievalError,
    UnknownItemError,
    export_model,
)
from transrec.serving.retrieval_faiss import pq_sub_vectors
from transrec.utils.packages import MissingPackageError


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    return {kind: build_export(root, kind) for kind in ("text", "mom", "id", "bert4rec")}


@pytest.fixture
def writable(exports, tmp_path):
    """A copy of an export that a test may add items to."""

    def copy(kind):
        return shutil.copytree(exports[kind].directory, tmp_path / f"{kind}-copy")

    return copy


def full_ranking_top_k(checkpoint, dataset, histories, k):
    """The top k by the model's full ranking over the catalogue with the history excluded (what
    ``transrec evaluate`` ranks by), as raw ids, computed without serving code."""
    model = SequentialRecommender.from_pretrained(checkpoint).eval()
    encoder = model.item_encoder
    table = item_table(model, ItemContent(dataset, text=encoder.needs_text, image=encoder.needs_image))
    with torch.no_grad():
        users = user_vectors(model, table, histories, np.zeros(len(histories), dtype=np.int64))
    scores = users @ table.T
    scores[:, 0] = -torch.inf
    for row, history in enumerate(histories):
        scores[row, torch.tensor(history, dtype=torch.long)] = -torch.inf
    values, top = scores.topk(k, dim=1)
    return [[dataset.item_ids[i] for i in row] for row in top.tolist()], values


@pytest.mark.parametrize("kind", ["text", "mom", "id", "bert4rec"])
def test_recommend_equals_the_evaluation_full_ranking_of_every_test_history(exports, kind):
    built = exports[kind]
    data = built.dataset
    histories, _ = stage_histories(data, "test")
    expected, expected_scores = full_ranking_top_k(built.checkpoint, data, histories, k=5)
    rec = Recommender.load(built.directory)
    answers = rec.recommend_many([[data.item_ids[i] for i in h] for h in histories], k=5)
    assert [a.items for a in answers] == expected
    got = torch.tensor([a.scores for a in answers])
    assert torch.allclose(got, expected_scores, atol=1e-5)
    assert any(len(h) > rec.max_len for h in histories)  # truncated histories are compared too
    one = rec.recommend([data.item_ids[i] for i in histories[3]], k=5)
    assert one.items == expected[3]


def test_a_content_record_scores_like_the_catalogue_item_with_that_content(exports):
    built = exports["text"]
    data, rec = built.dataset, Recommender.load(built.directory)
    a, b = data.item_ids[1], data.item_ids[2]
    by_id = rec.recommend([a, b], k=8, exclude_seen=False)
    mixed = rec.recommend([a, {"text": "  " + data.item_texts[2].upper() + " "}], k=8, exclude_seen=False)
    assert mixed.items == by_id.items
    assert np.allclose(mixed.scores, by_id.scores, atol=1e-5)
    assert mixed.used_history == 2 and not mixed.popular
    other = rec.recommend([a, {"text": "an unrelated text about nothing"}], k=8, exclude_seen=False)
    assert not np.allclose(other.scores, by_id.scores, atol=1e-3)


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_an_image_record_is_preprocessed_like_the_prepared_images(exports, tmp_path, image_format):
    """The raw image bytes of an image-only item, sent as a record, give the item's stored vector: decoding,
    resizing and (for a JPEG store) the JPEG round trip of the prepared images are reproduced."""
    built = exports["mom"]
    if image_format == "raw":
        dataset = build_dataset(tmp_path, "all", image_format="raw")
        built = BuiltExport(
            export_model(built.checkpoint, dataset.path, tmp_path / "export"), dataset, built.checkpoint
        )
    data, rec = built.dataset, Recommender.load(built.directory)
    assert data.meta["images"]["format"] == image_format
    raw = make_world(SyntheticWorldConfig.tiny(seed=0)).source.items
    image_only = [i for i in range(1, data.n_items + 1) if data.item_modality[i] == 2]
    first = data.item_ids[1]
    for item in image_only[:3]:
        source = raw.images[raw.ids.index(data.item_ids[item])].read_bytes()
        by_id = rec.recommend([first, data.item_ids[item]], k=6, exclude_seen=False)
        mixed = rec.recommend([first, {"image": source, "text": None}], k=6, exclude_seen=False)
        assert mixed.items == by_id.items
        assert np.allclose(mixed.scores, by_id.scores, atol=1e-5)


def test_an_empty_history_gets_the_most_popular_training_items_flagged(exports):
    built = exports["text"]
    data = built.dataset
    counts = np.zeros(data.n_items + 1, dtype=np.int64)
    for user in range(data.n_users):
        np.add.at(counts, data.sequence(user)[:-2], 1)  # training items only: s[:-2]
    order = sorted(range(1, data.n_items + 1), key=lambda i: (-counts[i], i))[:4]
    answer = Recommender.load(built.directory).recommend([], k=4)
    assert answer.popular and answer.used_history == 0
    assert answer.items == [data.item_ids[i] for i in order]
    assert answer.scores == [float(counts[i]) for i in order]
    assert answer.to_dict() == {"items": answer.items, "scores": answer.scores, "popular": True,
                                "used_history": 0, "truncated": 0}  # fmt: skip


@pytest.mark.parametrize("kind", ["text", "bert4rec"])
def test_an_over_long_history_uses_the_most_recent_items_and_says_how_many_were_dropped(exports, kind):
    built = exports[kind]
    data, rec = built.dataset, Recommender.load(built.directory)
    history = list(data.item_ids[1:10])
    answer = rec.recommend(history, k=5, exclude_seen=False)
    assert rec.max_len == (3 if kind == "bert4rec" else 4)
    assert (answer.used_history, answer.truncated) == (rec.max_len, len(history) - rec.max_len)
    recent = rec.recommend(history[-rec.max_len :], k=5, exclude_seen=False)
    assert recent.items == answer.items and recent.truncated == 0


def test_exclude_seen_removes_exactly_the_history(exports):
    built = exports["text"]
    data, rec = built.dataset, Recommender.load(built.directory)
    history = [data.item_ids[3], data.item_ids[5], data.item_ids[3]]
    everything = rec.recommend(history, k=1000, exclude_seen=False)
    assert sorted(everything.items) == sorted(data.item_ids[1:])
    unseen = rec.recommend(history, k=1000)
    assert unseen.items == [i for i in everything.items if i not in history]
    named = rec.recommend([data.item_ids[3], {"id": data.item_ids[7], "text": "whatever"}], k=1000)
    assert data.item_ids[7] not in named.items and data.item_ids[3] not in named.items


def test_unknown_ids_are_all_listed_and_k_is_checked(exports):
    built = exports["text"]
    rec = Recommender.load(built.directory)
    known = built.dataset.item_ids[1]
    with pytest.raises(UnknownItemError) as err:
        rec.recommend_many([["nope-1", known], [known, "nope-2", "nope-1"]])
    assert err.value.ids == ["nope-1", "nope-2"]
    assert "nope-1" in str(err.value) and "nope-2" in str(err.value)
    for k in (0, 1001, True, 2.5, "3"):
        with pytest.raises(InvalidRequestError, match="k must be"):
            rec.recommend([known], k=k)
    with pytest.raises(InvalidRequestError):
        rec.recommend(known)  # a bare string is not a history
    with pytest.raises(UnknownItemError):
        rec.similar_items("nope-3")


def test_similar_items_ranks_by_item_vector_without_the_item(exports):
    built = exports["text"]
    rec = Recommender.load(built.directory)
    vectors = rec._bundle.vectors
    answer = rec.similar_items(built.dataset.item_ids[4], k=3)
    scores = vectors @ vectors[4]
    scores[0] = scores[4] = -torch.inf
    assert answer.items == [built.dataset.item_ids[i] for i in scores.topk(3).indices.tolist()]
    everything = rec.similar_items(built.dataset.item_ids[4], k=1000).items
    assert sorted(everything) == sorted(set(built.dataset.item_ids[1:]) - {built.dataset.item_ids[4]})


def test_added_items_are_recommended_at_once_and_after_a_reload(exports, writable):
    directory = writable("text")
    data = exports["text"].dataset
    rec = Recommender.load(directory)
    history = [data.item_ids[1], data.item_ids[2], data.item_ids[3]]
    top = rec.recommend(history, k=1).items[0]
    text = rec.item(top)["text"]
    assert rec.add_items([{"id": "brand-new", "text": text, "image": None}]) == ["brand-new"]
    # The "Done when" example: same content as the top item -> the same vector up to float rounding (one
    # item encoded alone, the catalogue's in batches of other shapes), so the two rank next to each other,
    # in either order.
    answer = rec.recommend(history, k=3)
    assert sorted(answer.items[:2]) == sorted([top, "brand-new"])
    assert answer.scores[0] == pytest.approx(answer.scores[1], rel=1e-5)
    assert rec.item("brand-new") == {"id": "brand-new", "text": text, "modality": "text", "added": True}
    assert rec.catalogue_size == data.n_items + 1
    reloaded = Recommender.load(directory)
    assert reloaded.recommend(history, k=3).items == answer.items
    assert reloaded.metadata()["counts"] == {
        "exported": data.n_items,
        "added": 1,
        "removed": 0,
        "catalogue": data.n_items + 1,
    }


def test_add_then_remove_and_removing_a_catalogue_item_persist(exports, writable):
    directory = writable("text")
    data = exports["text"].dataset
    rec = Recommender.load(directory)
    rec.add_items([{"id": "n1", "text": "red shoes"}, {"id": "n2", "text": "blue shoes"}])
    rec.remove_items(["n1", data.item_ids[2]])
    everything = rec.recommend([data.item_ids[1]], k=1000, exclude_seen=False).items
    assert "n1" not in everything and data.item_ids[2] not in everything and "n2" in everything
    for gone in ("n1", data.item_ids[2]):
        with pytest.raises(UnknownItemError):
            rec.item(gone)
    with pytest.raises(UnknownItemError) as err:
        rec.remove_items(["n2", "n1", "never"])  # nothing is removed when one id is unknown
    assert err.value.ids == ["n1", "never"] and rec.item("n2")["added"]
    reloaded = Recommender.load(directory)
    assert reloaded.recommend([data.item_ids[1]], k=1000, exclude_seen=False).items == everything
    assert reloaded.metadata()["counts"]["removed"] == 1 and reloaded.metadata()["counts"]["added"] == 1


def test_a_duplicate_id_is_refused_unless_replace(exports, writable):
    directory = writable("text")
    data = exports["text"].dataset
    rec = Recommender.load(directory)
    rec.add_items([{"id": "n1", "text": "red shoes"}])
    with pytest.raises(DuplicateItemError) as err:
        rec.add_items(
            [{"id": "n2", "text": "x"}, {"id": "n1", "text": "y"}, {"id": data.item_ids[1], "text": "z"}]
        )
    assert err.value.ids == ["n1", data.item_ids[1]]
    with pytest.raises(UnknownItemError):
        rec.item("n2")  # the whole call was refused
    with pytest.raises(DuplicateItemError, match="repeated"):
        rec.add_items([{"id": "n3", "text": "x"}, {"id": "n3", "text": "y"}])
    rec.add_items(
        [{"id": "n1", "text": "green hat"}, {"id": data.item_ids[1], "text": "a new text"}], replace=True
    )
    assert rec.item("n1")["text"] == "green hat"
    assert rec.item(data.item_ids[1]) == {
        "id": data.item_ids[1],
        "text": "a new text",
        "modality": "text",
        "added": True,
    }
    assert rec.catalogue_size == data.n_items + 1
    assert Recommender.load(directory).item("n1")["text"] == "green hat"


def test_an_id_model_cannot_add_items_by_content(exports, writable):
    rec = Recommender.load(writable("id"))
    with pytest.raises(ContentError) as err:
        rec.add_items([{"id": "n1", "text": "red shoes"}])
    assert err.value.reason == "unsupported_modality" and "reads no content" in str(err.value)
    assert rec.recommend([exports["id"].dataset.item_ids[1]], k=3).items  # still serves its catalogue


def test_checkpoint_helper_is_deterministic(tmp_path, exports):
    # The fixture's random models are seeded: two builds hold the same weights (export byte identity
    # relies on it).
    a = build_checkpoint(tmp_path / "a", exports["text"].dataset, "text")
    b = build_checkpoint(tmp_path / "b", exports["text"].dataset, "text")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def png(width, height, rows=2):
    """PNG bytes declaring ``width x height`` RGB pixels, with only ``rows`` rows of data: a decompression
    bomb's header, built in memory."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (1 + 3 * width) * rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def real_png(size=40, colour=(200, 30, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_RECORDS = {
    "truncated image": ({"image": real_png()[:60]}, "undecodable"),
    "not an image": ({"image": b"GIF89a but not really"}, "undecodable"),
    "bomb over our pixel limit": ({"image": png(7000, 7000)}, "decompression_bomb"),
    "bomb over Pillow's limit": ({"image": png(100_000, 100_000)}, "decompression_bomb"),
    "image over the byte limit": (
        {"image": real_png(size=300, colour=(1, 2, 3)) + b"\x00" * 3000},
        "too_large",
    ),
    "text over the limit": ({"text": "word " * 30}, "text_too_long"),
    "no content": ({"text": "   ", "image": None}, "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_bad_record_refuses_the_whole_add_and_changes_nothing(exports, writable, case):
    directory = writable("mom")
    limits = ContentLimits(max_text_chars=100, max_image_bytes=3000)
    rec = Recommender.load(directory, limits=limits)
    rec.add_items([{"id": "first", "text": "w1 w2"}])
    before_files = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    history = list(exports["mom"].dataset.item_ids[1:4])
    before = rec.recommend(history, k=1000)
    record, reason = BAD_RECORDS[case]
    with pytest.raises(ContentError) as err:
        rec.add_items([{"id": "good", "text": "w3 w4", "image": real_png()}, {"id": "bad", **record}])
    assert err.value.reason == reason and "'bad'" in str(err.value)
    assert rec.recommend(history, k=1000) == before and rec.catalogue_size == len(before.items) + 3
    assert {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()} == before_files
    with pytest.raises(ContentError) as err:
        rec.recommend([*history, record])  # the same refusal for a record in a history
    assert err.value.reason == reason


def test_an_image_item_can_be_added_to_a_mom_model_and_a_text_model_refuses_images(exports, writable):
    rec = Recommender.load(writable("mom"))
    rec.add_items(
        [
            {"id": "pic", "image": real_png()},
            {"id": "both", "text": "w1", "image": real_png(colour=(0, 0, 200))},
        ]
    )
    assert rec.item("pic")["modality"] == "image" and rec.item("both")["modality"] == "both"
    assert rec.similar_items("pic", k=1000).items.count("both") == 1
    with pytest.raises(InvalidRequestError, match="'image' must be bytes"):
        rec.add_items([{"id": "path", "image": "/etc/passwd"}])  # a path is never opened
    with pytest.raises(InvalidRequestError, match="unknown fields"):
        rec.add_items([{"id": "url", "image_url": "http://example.com/a.png"}])
    text_model = Recommender.load(writable("text"))
    with pytest.raises(ContentError) as err:
        text_model.add_items([{"id": "pic", "text": "w1", "image": real_png()}])
    assert err.value.reason == "unsupported_modality" and "text only" in str(err.value)


def test_concurrent_readers_always_see_a_whole_catalogue_while_items_come_and_go(exports, writable):
    directory = writable("text")
    data = exports["text"].dataset
    rec = Recommender.load(directory)
    index_add, index_remove = rec._index.add, rec._index.remove

    def add_then_pause(*args):  # widen the window between changing the index and the id maps
        index_add(*args)
        time.sleep(0.003)

    def remove_then_pause(*args):
        index_remove(*args)
        time.sleep(0.003)

    rec._index.add, rec._index.remove = add_then_pause, remove_then_pause
    history = list(data.item_ids[1:4])
    added = [f"new-{j:02d}" for j in range(16)]
    done, errors, seen = threading.Event(), [], set()

    def read():
        while not done.is_set():
            try:
                answer = rec.recommend(history, k=1000, exclude_seen=False)
                present = [i for i in added if i in answer.items]
                # Items are added in order, then removed in order: every state is a prefix or a suffix.
                positions = [added.index(i) for i in present]
                whole = positions == list(range(len(present))) or positions == list(
                    range(16 - len(present), 16)
                )
                exported = [i for i in answer.items if not i.startswith("new-")]
                if not whole or len(exported) != data.n_items or len(set(answer.items)) != len(answer.items):
                    errors.append(f"inconsistent snapshot: {present}, {len(exported)} catalogue items")
                if answer.scores != sorted(answer.scores, reverse=True):
                    errors.append("scores out of order")
                seen.add(len(present))
                rec.similar_items(history[0], k=5)
            except Exception as err:  # any error in a reader fails the test
                errors.append(repr(err))

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        for item in added:
            rec.add_items([{"id": item, "text": f"text of {item}"}])
        for item in added:
            rec.remove_items([item])
    finally:
        done.set()
        for thread in readers:
            thread.join()
    assert not errors, errors[:5]
    assert len(seen) > 3  # the readers saw the catalogue change under them
    assert rec.catalogue_size == data.n_items


def test_a_write_killed_before_its_commit_point_leaves_the_old_state(exports, writable, monkeypatch):
    """The new items' files are written, then the journal line is cut short (a full disk, a kill): the
    recommender and a reload both have the old catalogue, the half line and the new files are gone, and
    the next change commits normally."""
    import transrec.serving.overlay as overlay_module

    directory = writable("text")
    rec = Recommender.load(directory)
    rec.add_items([{"id": "kept", "text": "w1"}])  # the first change writes the snapshot
    added = directory / "added"
    state = (added / "state.json").read_bytes()

    def disk_full(path, text):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text[: len(text) // 2])  # half the line, no newline
        raise OSError("No space left on device")

    monkeypatch.setattr(overlay_module, "_append", disk_full)
    with pytest.raises(OSError, match="No space"):
        rec.add_items([{"id": "lost", "text": "w2"}, {"id": "lost-too", "text": "w4"}])
    monkeypatch.undo()
    assert (added / "state.json").read_bytes() == state
    assert not (added / "journal.jsonl").exists() or (added / "journal.jsonl").read_bytes() == b""
    assert len(list((added / "items").iterdir())) == 1  # the failed change's files are deleted with it
    for current in (rec, Recommender.load(directory)):
        with pytest.raises(UnknownItemError):
            current.item("lost")
        assert current.item("kept")["added"]
    rec.add_items([{"id": "next", "text": "w3"}])
    assert len(list((added / "items").iterdir())) == 2
    reloaded = Recommender.load(directory)
    assert reloaded.catalogue_size == exports["text"].dataset.n_items + 2 and reloaded.item("next")["added"]


@pytest.mark.parametrize("index", ["faiss-flat", "faiss-hnsw", "faiss-pq"])
def test_faiss_indexes_answer_like_the_exact_one_through_adds_and_removes(exports, tmp_path, index):
    pytest.importorskip("faiss")
    data, source = exports["text"].dataset, exports["text"].directory
    exact = Recommender.load(shutil.copytree(source, tmp_path / "exact"))
    other = Recommender.load(shutil.copytree(source, tmp_path / "other"), index=index)
    histories = [list(data.item_ids[1:4]), [data.item_ids[5]], []]
    for step in range(3):
        got = [a.items for a in other.recommend_many(histories, k=8)]
        assert got == [a.items for a in exact.recommend_many(histories, k=8)], step
        for rec in (exact, other):  # a new item, then a catalogue item and the new one removed
            if step == 0:
                rec.add_items([{"id": "n1", "text": rec.item(data.item_ids[2])["text"] + " w9"}])
            elif step == 1:
                rec.remove_items([data.item_ids[7], "n1"])
    assert other.metadata()["index"] == index


def test_index_parameters_reach_the_index_and_unknown_ones_are_refused_before_anything_loads(exports):
    pytest.importorskip("faiss")
    source = exports["text"].directory
    rec = Recommender.load(source, index="faiss-pq", index_parameters={"refine": 7, "seed": 2})
    # In force: m is the default chosen for the vectors' dimension, not the None given.
    assert rec._index.parameters["m"] is None and rec._index.sub_vectors == pq_sub_vectors(rec._index.dim)
    assert rec.metadata()["index_parameters"] == {"m": rec._index.sub_vectors, "refine": 7, "seed": 2}
    assert rec._index.parameters["refine"] == 7
    assert Recommender.load(source).metadata()["index_parameters"] == {"chunk_size": 65536}
    with pytest.raises(
        RetrievalError, match="the faiss-pq index has no parameter 'ef_search'; it takes m, refine"
    ):
        Recommender.load(source, index="faiss-pq", index_parameters={"ef_search": 64})
    # Checked before the export is read: a missing export is not what is reported.
    with pytest.raises(RetrievalError, match="refine must be an integer >= 1, got 0"):
        Recommender.load(source.parent / "no-such-export", index="faiss-pq", index_parameters={"refine": 0})


def test_a_missing_faiss_is_reported_before_the_export_is_read(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingPackageError, match="faiss"):
        Recommender.load(tmp_path / "no-such-export", index="faiss-hnsw")


def _blocked_forward(monkeypatch):
    """Make the next user-encoder pass of ``recommend`` wait until released: ``(started, release)``."""
    import transrec.serving.recommender as recommender_module

    started, release = threading.Event(), threading.Event()
    forward = recommender_module.user_vectors

    def waiting(*args, **kwargs):
        started.set()
        assert release.wait(30), "never released"
        return forward(*args, **kwargs)

    monkeypatch.setattr(recommender_module, "user_vectors", waiting)
    return started, release


def test_a_change_is_not_held_up_by_a_forward_pass_in_progress(exports, writable, monkeypatch):
    """Readers hold the catalogue's lock while they read it and while they search, not while the model
    runs: an add commits while a recommendation's forward pass is still going."""
    data = exports["text"].dataset
    rec = Recommender.load(writable("text"))
    started, release = _blocked_forward(monkeypatch)
    answer = {}
    reader = threading.Thread(target=lambda: answer.update(r=rec.recommend([data.item_ids[1]], k=5)))
    reader.start()
    try:
        assert started.wait(30)
        writer = threading.Thread(target=rec.add_items, args=([{"id": "during", "text": "w1 w2"}],))
        writer.start()
        writer.join(10)
        assert not writer.is_alive(), "the add waited for the forward pass"
        assert rec.item("during")["added"]
    finally:
        release.set()
        reader.join(30)
    assert len(answer["r"].items) == 5


def test_a_history_item_replaced_during_the_forward_pass_is_still_excluded(exports, writable, monkeypatch):
    """Seen items are excluded by id when the index is searched: an item of the history replaced (under
    the same id, so under a new internal id) while the model ran is not recommended back to the user."""
    data = exports["text"].dataset
    rec = Recommender.load(writable("text"))
    history = [data.item_ids[1], data.item_ids[2], data.item_ids[3]]
    top = rec.recommend(history, k=1).items[0]
    twin = {"id": history[-1], "text": rec.item(top)["text"]}  # scores like the top item, under a seen id
    started, release = _blocked_forward(monkeypatch)
    answer = {}
    reader = threading.Thread(target=lambda: answer.update(r=rec.recommend(history, k=5)))
    reader.start()
    try:
        assert started.wait(30)
        rec.add_items([twin], replace=True)
    finally:
        release.set()
        reader.join(30)
    assert top in answer["r"].items[:2] and not set(history) & set(answer["r"].items)
