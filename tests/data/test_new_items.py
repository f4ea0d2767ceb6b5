"""The new-item protocol of preparation (``PrepareConfig.new_items``, ``transrec.data.new_items``)."""

import json

import numpy as np
import pytest

from transrec.cli.main import main
from transrec.config import ConfigError
from transrec.data.new_items import mark_new_items, new_item_count
from transrec.data.prepare import PrepareConfig, prepare
from transrec.evaluation.model_eval import subset_masks
from transrec.training.batches import SequenceTrainingData, training_item_counts

from .rawbuild import raw_dataset

# Integer ids, listed in order, so item "k" gets index k. First-seen times: i1 1, i2 2, i3 3, i5 6, i6 8,
# i4 9 (u4), i7 30, i8 40: with new_items=0.25, round(0.25 * 8) = 2 items are new, i7 and i8.
LOG = {
    "u1": [(1, 1), (2, 2), (3, 3), (7, 30), (4, 31)],  # i7 in the middle: removed; the test target i4 stays
    "u2": [(2, 4), (1, 5), (5, 6), (8, 40)],  # the test target i8 is new: it stays
    "u3": [(3, 7), (6, 8), (7, 41), (1, 42), (2, 43), (8, 44)],  # i7 removed, test target i8 stays
    "u4": [(4, 9), (7, 35), (8, 45)],  # left with [i4, i8]: too short, removed
    "u5": [(5, 10), (6, 11), (4, 12), (2, 13)],  # no new item
}
REMAINING = {"u1": [1, 2, 3, 4], "u2": [2, 1, 5, 8], "u3": [3, 6, 1, 2, 8], "u5": [5, 6, 4, 2]}


def raw(log=LOG):
    rows = [(user, str(item), float(t)) for user, events in log.items() for item, t in events]
    return raw_dataset(rows, {str(i): (f"item number {i}", None) for i in range(1, 9)})


def config(**kw):
    return PrepareConfig(**{"user_k": 1, "item_k": 1, "new_items": 0.25, **kw})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(raw(), config(), tmp_path_factory.mktemp("new") / "p", progress=False)


def test_the_items_first_seen_latest_are_new_and_only_test_targets(prepared):
    ds = prepared
    assert ds.item_ids == ["", "1", "2", "3", "4", "5", "6", "7", "8"]  # i7 kept, with no interaction left
    assert np.flatnonzero(ds.item_is_new).tolist() == [7, 8]
    assert ds.user_ids == ["u1", "u2", "u3", "u5"]  # u4 dropped
    assert {u: ds.sequence(k).tolist() for k, u in enumerate(ds.user_ids)} == REMAINING
    assert ds.split.test_targets.tolist() == [4, 8, 8, 2]
    meta = json.loads((ds.path / "meta.json").read_text())
    assert meta["config"]["new_items"] == 0.25
    assert meta["new_items"]["indices"] == [7, 8]
    assert (meta["new_items"]["items"], meta["new_items"]["test_users"]) == (2, 2)
    assert meta["counts"]["interactions"] == 17 and meta["counts"]["items"] == 8


def test_the_report_counts_what_the_protocol_did(prepared):
    counts = prepared.report["counts"]
    assert counts["new_item"] == 2
    assert counts["new_item_interaction"] == 3  # i7 of u1, u3 and u4
    assert counts["new_item_short_user"] == 1  # u4
    assert counts["new_item_user_interaction"] == 2  # u4's i4 and i8
    assert counts["new_item_test_user"] == 2  # u2 and u3


def test_no_new_item_reaches_training_or_validation(prepared):
    ds, new = prepared, prepared.item_is_new
    split = ds.split
    for user in range(ds.n_users):
        assert not new[ds.sequence(user)[:-1]].any()  # validation and test histories, training included
    assert not new[split.valid_targets].any()
    assert not new[np.flatnonzero(training_item_counts(ds))].any()
    for mode in ("s2s", "s2o", "masked"):
        data = SequenceTrainingData(ds, max_len=3, mode=mode, n_negatives=0, content=None, seed=0)
        for index in range(len(data)):
            window = data[index]
            assert not new[window["inputs"]].any() and not new[window["targets"]].any()
    # The evaluation subset "new" is exactly the test users whose target is a new item.
    assert subset_masks(ds, "test", ["new"])["new"].tolist() == new[split.test_targets].tolist()


def test_ties_on_first_seen_go_to_the_larger_id_whatever_the_file_order():
    items = np.array([0, 1, 2, 3, 2, 1])  # codes; 1, 2 and 3 first seen at time 5
    stamps = np.array([1.0, 5.0, 5.0, 5.0, 9.0, 9.0])
    ranks = np.array([0, 3, 1, 2])  # code 1 has the largest id, then code 3
    assert np.flatnonzero(mark_new_items(items, stamps, ranks, 4, 0.25)).tolist() == [1]
    assert np.flatnonzero(mark_new_items(items, stamps, ranks, 4, 0.5)).tolist() == [1, 3]
    assert np.flatnonzero(mark_new_items(items[::-1], stamps[::-1], ranks, 4, 0.5)).tolist() == [1, 3]
    assert new_item_count(0.01, 50) == 1 and new_item_count(0.1, 50) == 5 and new_item_count(0.0, 50) == 0


def test_no_new_items_by_default_and_bad_fractions_are_refused(tmp_path):
    ds = prepare(raw(), config(new_items=0.0), tmp_path / "p", progress=False)
    assert not ds.item_is_new.any() and not (ds.path / "item_is_new.npy").exists()
    assert ds.n_interactions == sum(len(events) for events in LOG.values())
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="new_items"):
            config(new_items=bad)


def test_cli_flag_prepares_and_prints_the_new_items(tmp_path, capsys):
    source = tmp_path / "toy"
    source.mkdir()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{user}\t{item}\t{t}" for user, events in LOG.items() for item, t in events]
    (source / "toy.inter").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["data", "prepare", str(source), "--format", "recbole", "--output", str(out), "--quiet",
            "--new-items", "0.25", "user_k=1", "item_k=1", "require_content=false"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "new items: 2 (0.25 of the items, first seen latest), the test target of 2 users" in printed
    assert "new_item_short_user" in printed
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["new_items"] == 0.25 and meta["counts"]["users"] == 4
    assert main(["data", "prepare", str(source), "--format", "recbole", "--new-items", "1"]) == 2
    assert "new_items must be a fraction" in capsys.readouterr().err
