"""Adds that wait while another change is being written are committed together (``Recommender.
_commit_adds``): one write of ``added/`` for the group, each add with its own outcome, in order."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from transrec.serving import Recommender
from transrec.serving.errors import DuplicateItemError

from .exports import build_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return build_export(tmp_path_factory.mktemp("exports"), "text")


def test_waiting_adds_are_committed_by_one_write_each_with_its_own_outcome(export, tmp_path):
    directory = shutil.copytree(export.directory, tmp_path / "copy")
    rec = Recommender.load(directory)
    size = rec.catalogue_size
    catalogue_id = rec.recommend([], k=1).items[0]
    writes = []
    persist = rec._persist
    rec._persist = lambda overlay: writes.append(overlay.ids) or persist(overlay)
    calls = [
        ([{"id": "a", "text": "the first film"}], False),
        ([{"id": "b", "text": "the second film"}], False),
        ([{"id": catalogue_id, "text": "taken"}], False),  # a duplicate: refused, alone
        ([{"id": "a", "text": "the first film, again"}], True),  # replaces an add of the same group
        ([{"id": "c", "text": "the third film"}], False),
    ]
    outcomes: dict[int, object] = {}

    def add(j: int) -> None:
        records, replace = calls[j]
        try:
            outcomes[j] = rec.add_items(records, replace=replace)
        except DuplicateItemError as err:
            outcomes[j] = err

    threads = []
    with rec._writer:  # a change being written: the adds encode, then queue, in this order
        for j in range(len(calls)):
            threads.append(threading.Thread(target=add, args=(j,)))
            threads[-1].start()
            deadline = time.monotonic() + 60
            while len(rec._pending) <= j:
                assert time.monotonic() < deadline, "the add did not queue"
                time.sleep(0.005)
    for thread in threads:
        thread.join(timeout=60)
    assert writes == [("b", "a", "c")]  # one write; "a" replaced by its second add
    assert outcomes[0] == ["a"] and outcomes[1] == ["b"] and outcomes[3] == ["a"] and outcomes[4] == ["c"]
    assert isinstance(outcomes[2], DuplicateItemError) and outcomes[2].ids == [catalogue_id]
    assert rec.catalogue_size == size + 3
    assert rec.item("a")["text"] == "the first film, again"
    assert rec.item(catalogue_id)["added"] is False
    reloaded = Recommender.load(directory)  # the one write holds the whole group
    assert reloaded.catalogue_size == size + 3
    assert [reloaded.item(i)["text"] for i in ("a", "b", "c")] == [
        "the first film, again", "the second film", "the third film"]  # fmt: skip
    history = rec.recommend([], k=3).items
    assert rec.recommend(history, k=size + 3).items == reloaded.recommend(history, k=size + 3).items


def test_a_failed_write_fails_every_add_of_its_group_and_changes_nothing(export, tmp_path):
    directory = shutil.copytree(export.directory, tmp_path / "copy")
    rec = Recommender.load(directory)
    size = rec.catalogue_size

    def full_disk(overlay):
        raise OSError(28, "No space left on device")

    rec._persist = full_disk
    errors = {}

    def add(j: int) -> None:
        try:
            rec.add_items([{"id": f"n{j}", "text": f"film {j}"}])
        except OSError as err:
            errors[j] = err

    threads = []
    with rec._writer:
        for j in range(3):
            threads.append(threading.Thread(target=add, args=(j,)))
            threads[-1].start()
            deadline = time.monotonic() + 60
            while len(rec._pending) <= j:
                assert time.monotonic() < deadline, "the add did not queue"
                time.sleep(0.005)
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(errors) == [0, 1, 2] and all(err.errno == 28 for err in errors.values())
    assert rec.catalogue_size == size and not (directory / "added").exists()
    assert rec._pending == []
