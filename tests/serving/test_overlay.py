"""The ``added/`` overlay on its own: snapshot + journal, replay, torn lines, snapshots, leftovers, cost."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import transrec.serving.overlay as overlay_module
from transrec.serving.content import PreparedItem
from transrec.serving.errors import ExportError
from transrec.serving.overlay import (
    ITEMS_DIR,
    JOURNAL_FILE,
    STATE_FILE,
    Overlay,
    read_overlay,
    read_overlay_files,
    write_overlay,
)

D = 8
FIRST = 101  # internal ids of added items start after a 100-item catalogue


def item(name: str) -> PreparedItem:
    return PreparedItem(name, f"text of {name}", np.arange(1, 4 + len(name) % 3, dtype=np.int64), None)


def add(overlay: Overlay, *names: str, replace: dict[str, int] | None = None) -> Overlay:
    """``overlay`` with items ``names`` added (vectors from their names), dropping ``replace``'s ids."""
    dropped = set((replace or {}).values())
    vectors = torch.stack([torch.full((D,), float(sum(map(ord, n)) % 97)) for n in names])
    return overlay.with_changes(
        drop_added={i for i in dropped if i > 100},
        drop_exported={i for i in dropped if i <= 100},
        new=[(n, item(n)) for n in names],
        new_vectors=vectors,
    )


def remove(overlay: Overlay, *internal: int) -> Overlay:
    return overlay.with_changes({i for i in internal if i > 100}, {i for i in internal if i <= 100}, [], None)


def same(a: Overlay, b: Overlay) -> None:
    assert (a.next_id, a.removed, a.ids, a.internal) == (b.next_id, b.removed, b.ids, b.internal)
    assert [x.text for x in a.items] == [x.text for x in b.items]
    assert torch.equal(a.vectors, b.vectors) if len(a.ids) else len(b.ids) == 0


def history(directory, steps: int) -> Overlay:
    """A mixed history of ``steps`` changes (adds, removals of added and catalogue items, replaces),
    each written as it is made."""
    overlay = Overlay(next_id=FIRST)
    for step in range(steps):
        if step % 5 == 3 and len(overlay.internal) > 2:
            overlay = remove(overlay, overlay.internal[1])
        elif step % 7 == 4:
            overlay = remove(overlay, 1 + step % 100)
        elif step % 6 == 5 and overlay.internal:
            name = overlay.ids[-1]
            overlay = add(overlay, name, replace={name: overlay.internal[-1]})
        else:
            overlay = add(overlay, f"s{step}", f"t{step}")
        overlay = write_overlay(directory, overlay)
    return overlay


def test_a_history_of_changes_reads_back_as_written(tmp_path):
    overlay = history(tmp_path, 40)
    assert (tmp_path / JOURNAL_FILE).stat().st_size > 0  # the later changes are journal lines
    same(read_overlay(tmp_path), overlay)
    files = read_overlay_files(tmp_path)
    assert sorted(files) == sorted(f"{ITEMS_DIR}/{i}.safetensors" for i in overlay.internal)
    assert sorted(p.name for p in (tmp_path / ITEMS_DIR).iterdir()) == sorted(
        f"{i}.safetensors" for i in overlay.internal
    )  # dropped items' files are deleted


def test_each_change_appends_one_line_and_leaves_the_snapshot_alone(tmp_path):
    overlay = write_overlay(tmp_path, add(Overlay(next_id=FIRST), "a"))  # the first change: a snapshot
    snapshot = (tmp_path / STATE_FILE).read_bytes()
    assert json.loads(snapshot)["seq"] == 1 and not (tmp_path / JOURNAL_FILE).exists()
    overlay = write_overlay(tmp_path, add(overlay, "b"))
    overlay = write_overlay(tmp_path, remove(add(overlay, "c"), FIRST, 7))  # one change: add c, drop a, 7
    assert (tmp_path / STATE_FILE).read_bytes() == snapshot
    lines = (tmp_path / JOURNAL_FILE).read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [2, 3]
    last = json.loads(lines[1])
    assert (last["dropped"], last["removed"], [r["id"] for r in last["items"]]) == ([FIRST], [7], ["c"])
    read = read_overlay(tmp_path)
    assert read.ids == ("b", "c") and read.removed == (7,) and read.seq == 3
    same(read, overlay)


def test_the_journal_is_folded_into_a_snapshot_once_it_outgrows_it(tmp_path, monkeypatch):
    monkeypatch.setattr(overlay_module, "COMPACT_MIN_BYTES", 0)
    overlay = Overlay(next_id=FIRST)
    snapshots = 0
    for step in range(30):
        overlay = write_overlay(tmp_path, add(overlay, f"i{step}"))
        snapshots += overlay.journal_bytes == 0
        journal = tmp_path / JOURNAL_FILE
        assert overlay.journal_bytes == (journal.stat().st_size if journal.exists() else 0)
        assert overlay.journal_bytes <= overlay.state_bytes  # never larger than the snapshot for long
        same(read_overlay(tmp_path), overlay)
    assert 3 <= snapshots <= 8  # the snapshot doubles-ish each time: a few, not one per change


def test_bytes_written_per_add_do_not_grow_with_the_overlay(tmp_path, monkeypatch):
    """Rewriting the whole state on every add writes O(n^2) bytes over n adds; the journal O(n)."""
    written = []
    append, atomic = overlay_module._append, overlay_module.atomic_write_text
    monkeypatch.setattr(overlay_module, "_append", lambda p, t: written.append(len(t)) or append(p, t))
    monkeypatch.setattr(
        overlay_module, "atomic_write_text", lambda p, t: written.append(len(t)) or atomic(p, t)
    )
    overlay = Overlay(next_id=FIRST)
    for step in range(600):
        overlay = write_overlay(tmp_path, add(overlay, f"item-{step}"))
    final = (tmp_path / STATE_FILE).stat().st_size + overlay.journal_bytes
    # Snapshots at least double the journal's allowance each time: at most ~3x the final size in all.
    assert sum(written) < 4 * final, (sum(written), final)


def test_a_line_cut_short_by_a_kill_is_ignored_and_cut_off_by_the_next_change(tmp_path):
    overlay = history(tmp_path, 12)
    journal = tmp_path / JOURNAL_FILE
    committed = journal.read_bytes()
    with journal.open("ab") as handle:  # a kill in the middle of appending the next change's line
        handle.write(b'{"seq": 99, "next_id": 5, "removed": [1, 2')
    (tmp_path / ITEMS_DIR / "999.safetensors").write_bytes(b"a file of the killed change")
    read = read_overlay(tmp_path)
    same(read, overlay)
    read = write_overlay(tmp_path, add(read, "after"))
    assert journal.read_bytes().startswith(committed) and journal.read_bytes().count(b"\n") == (
        committed.count(b"\n") + 1
    )
    assert not (tmp_path / ITEMS_DIR / "999.safetensors").exists()  # swept by the process's first change
    same(read_overlay(tmp_path), read)


def test_a_kill_between_a_snapshot_and_emptying_the_journal_replays_nothing_twice(tmp_path, monkeypatch):
    overlay = history(tmp_path, 10)
    journal = (tmp_path / JOURNAL_FILE).read_bytes()
    assert journal
    monkeypatch.setattr(overlay_module, "COMPACT_MIN_BYTES", 0)
    overlay = write_overlay(tmp_path, add(overlay, "x"))  # a snapshot now
    assert overlay.journal_bytes == 0 and not (tmp_path / JOURNAL_FILE).read_bytes()
    (tmp_path / JOURNAL_FILE).write_bytes(journal)  # as if killed before the journal was emptied
    same(read_overlay(tmp_path), overlay)


def test_a_broken_journal_line_or_a_gap_is_an_export_error(tmp_path):
    history(tmp_path, 10)
    journal = tmp_path / JOURNAL_FILE
    lines = journal.read_bytes().split(b"\n")[:-1]
    journal.write_bytes(b"\n".join([lines[0], b"not json", *lines[1:]]) + b"\n")
    with pytest.raises(ExportError, match="line 2 is not valid JSON"):
        read_overlay(tmp_path)
    journal.write_bytes(b"\n".join([lines[0], *lines[2:]]) + b"\n")  # a committed change missing
    with pytest.raises(ExportError, match="expected"):
        read_overlay(tmp_path)


def test_a_previous_format_snapshot_is_read_and_rewritten_by_the_first_change(tmp_path):
    overlay = write_overlay(tmp_path, add(Overlay(next_id=FIRST), "a", "b"))
    state = json.loads((tmp_path / STATE_FILE).read_text())
    state["format_version"] = 2  # the format before the journal: no seq
    del state["seq"]
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    (tmp_path / JOURNAL_FILE).write_text("")
    read = read_overlay(tmp_path)
    same(read, overlay)
    assert read.state_version == 2
    read = write_overlay(tmp_path, add(read, "c"))
    assert json.loads((tmp_path / STATE_FILE).read_text())["format_version"] == 3  # not a journal line
    same(read_overlay(tmp_path), read)
    state["format_version"] = 4
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ExportError, match="overlay version 4"):
        read_overlay(tmp_path)


def test_adds_committed_together_and_replaced_within_the_group_write_one_line(tmp_path):
    overlay = write_overlay(tmp_path, add(Overlay(next_id=FIRST), "a"))
    group = add(overlay, "b")
    group = add(group, "b", replace={"b": group.internal[-1]})  # b replaced before it was ever written
    group = add(group, "a", replace={"a": FIRST})
    overlay = write_overlay(tmp_path, group)
    (line,) = (tmp_path / JOURNAL_FILE).read_text().splitlines()
    change = json.loads(line)
    assert change["dropped"] == [FIRST]  # only the written item; the unwritten b never reached the disk
    assert [r["id"] for r in change["items"]] == ["b", "a"]
    same(read_overlay(tmp_path), overlay)
    assert len(list((tmp_path / ITEMS_DIR).iterdir())) == 2
