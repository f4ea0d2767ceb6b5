"""The items added and removed while serving, kept beside an export in ``added/`` so that a restart has them.

    added/state.json                  a snapshot: format, the number of changes it holds (``seq``), next
                                      internal id, removed catalogue indices, and per added item: id,
                                      internal id, text, modality, its file, SHA-256 and size
    added/journal.jsonl               the changes since the snapshot, one JSON line each: its number,
                                      next internal id, the catalogue indices it removed, the added items
                                      it dropped (internal ids) and the rows of the items it added
    added/items/<internal>.safetensors   one added item: "vector" float32 [d], and its preprocessed
                                      content, "tokens" int32 [L] and/or "image" uint8 [S, S, 3]
                                      (``transrec export --check`` re-encodes it)

A change first writes the files of its new items (each to a temporary name, then renamed), then appends
its line to the journal in one write: the complete line is the commit point. Then the files of the items
it dropped are deleted. Reading replays the journal over the snapshot; a line cut short by a kill (no
final newline: a line's JSON holds none) is a change that never committed and is ignored, and the next
change cuts it off before appending. So each change writes only its own items and one line of about
200 bytes per item, whatever the size of the overlay: adding stays O(1) as the overlay grows (rewriting
the whole state on every add cost 1.2 ms at the first add and 5.5 ms after 1,500, on a loaded machine).

When the journal outgrows the snapshot (and ``COMPACT_MIN_BYTES``), the next change writes a new
snapshot instead (to a temporary name, then renamed), then empties the journal: lines of changes the
snapshot already holds (a kill between the two) are skipped on reading by their number. The first change
of an export, and the first one over a snapshot of the previous format (2: no journal, which an older
transrec would silently ignore), write a snapshot too. Files that no committed change names (a killed
change's) are deleted by a process's first change and by each snapshot.

Internal ids of added items start after the catalogue's indices; no committed change reuses one (a
failed change's ids are given to the next). One process writes an export's overlay at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from transrec.serving.content import PreparedItem, modality_name
from transrec.serving.errors import ExportError
from transrec.utils.io import atomic_write_text

STATE_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"
ITEMS_DIR = "items"
OVERLAY_VERSION = 3
#: Snapshot formats this version reads (2: a snapshot rewritten by every change, no journal).
READABLE_VERSIONS = (2, 3)
#: The journal is folded into a new snapshot once it is larger than this and than the snapshot.
COMPACT_MIN_BYTES = 64 * 1024


def item_file(internal: int) -> str:
    return f"{ITEMS_DIR}/{internal}.safetensors"


@dataclass(frozen=True)
class Overlay:
    """Added items (parallel tuples, in internal-id order) and removed catalogue indices. Frozen: a change
    makes a new ``Overlay`` (``with_changes``), so a reader's copy never changes. ``files`` maps each
    added item's file to its ``{"sha256", "bytes"}`` (and, once written, ``"row"``: its JSON row).

    The other fields are ``write_overlay``'s bookkeeping of what is on disk: ``seq``, the changes
    committed; ``journal_bytes`` and ``state_bytes``, the committed sizes of the journal and snapshot
    (0: no snapshot yet); ``state_version``, the snapshot's format; ``pending_dropped`` and
    ``pending_removed``, what changes made since the last write dropped (added items that have a file)
    and removed (catalogue indices); ``swept``, whether this process has cleaned the directory of
    uncommitted leftovers."""

    next_id: int
    removed: tuple[int, ...] = ()
    ids: tuple[str, ...] = ()
    internal: tuple[int, ...] = ()
    items: tuple[PreparedItem, ...] = ()
    vectors: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    seq: int = 0
    journal_bytes: int = 0
    state_bytes: int = 0
    state_version: int = OVERLAY_VERSION
    pending_dropped: tuple[int, ...] = ()
    pending_removed: tuple[int, ...] = ()
    swept: bool = False

    def with_changes(
        self,
        drop_added: set[int],
        drop_exported: set[int],
        new: list[tuple[str, PreparedItem]],
        new_vectors: torch.Tensor | None,
    ) -> Overlay:
        """This overlay without the added items of internal ids ``drop_added``, with the catalogue indices
        ``drop_exported`` removed, and ``new`` items (with their vectors) added under fresh internal ids
        (their ``files`` entries are filled in by ``write_overlay``). New items always come last, so the
        items not yet written are a suffix of the tuples. Without ``drop_added`` (a plain add) nothing is
        copied item by item: the tuples are extended and the vectors concatenated."""
        fresh = tuple(range(self.next_id, self.next_id + len(new)))
        new_rows = [new_vectors.detach().float().cpu()] if new_vectors is not None and len(new) else []
        if drop_added:
            keep = [j for j, i in enumerate(self.internal) if i not in drop_added]
            kept_vectors = [self.vectors[keep]] if keep else []
            ids = tuple(self.ids[j] for j in keep)
            internal = tuple(self.internal[j] for j in keep)
            items = tuple(self.items[j] for j in keep)
            # Items of a change not yet written (several adds committed together) have no entry yet.
            files = {name: self.files[name] for name in map(item_file, internal) if name in self.files}
        else:
            kept_vectors = [self.vectors] if self.internal else []
            ids, internal, items, files = self.ids, self.internal, self.items, self.files
        parts = kept_vectors + new_rows
        written_drops = tuple(sorted(i for i in drop_added if item_file(i) in self.files))
        newly_removed = tuple(sorted(set(drop_exported) - set(self.removed)))
        return replace(
            self,
            next_id=self.next_id + len(new),
            removed=tuple(sorted(set(self.removed) | drop_exported)),
            ids=ids + tuple(item_id for item_id, _ in new),
            internal=internal + fresh,
            items=items + tuple(item for _, item in new),
            vectors=torch.cat(parts) if parts else torch.zeros(0, 0),
            files=files,
            pending_dropped=self.pending_dropped + written_drops,
            pending_removed=self.pending_removed + newly_removed,
        )


# -- reading ----------------------------------------------------------------------------------------------


@dataclass
class _Replayed:
    """The overlay's rows after the snapshot and the journal, and the sizes that were committed."""

    next_id: int
    removed: list[int]
    rows: list[dict[str, Any]]
    seq: int
    journal_bytes: int
    state_bytes: int
    state_version: int


def _load_json(path: Path, text: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(f"{path}: {what} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ExportError(f"{path}: {what} is not a JSON object")
    return value


def _replay(directory: Path) -> _Replayed | None:
    """The snapshot with the journal's committed changes applied; None when there is no snapshot."""
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        return None
    raw = state_path.read_bytes()
    state = _load_json(state_path, raw, "the snapshot")
    version = state.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ExportError(
            f"{state_path}: overlay version {version!r}; this transrec reads versions {READABLE_VERSIONS}"
        )
    out = _Replayed(
        next_id=int(state["next_id"]),
        removed=[int(i) for i in state["removed"]],
        rows=list(state["items"]),
        seq=int(state.get("seq", 0)),
        journal_bytes=0,
        state_bytes=len(raw),
        state_version=version,
    )
    journal_path = directory / JOURNAL_FILE
    if version < 3 or not journal_path.is_file():
        return out
    journal = journal_path.read_bytes()
    end = journal.rfind(b"\n") + 1  # after it: a line cut short by a kill, a change never committed
    position = 0
    for number, line in enumerate(journal[:end].split(b"\n")[:-1], start=1):
        position += len(line) + 1
        change = _load_json(journal_path, line, f"line {number}")
        seq = int(change["seq"])
        if seq <= out.seq:  # held by the snapshot already (a kill between a snapshot and emptying this)
            continue
        if seq != out.seq + 1:
            raise ExportError(f"{journal_path}: line {number} is change {seq}, expected {out.seq + 1}")
        dropped = set(change["dropped"])
        if dropped:
            out.rows = [row for row in out.rows if row["internal"] not in dropped]
        out.rows += change["items"]
        out.removed = sorted(set(out.removed) | set(change["removed"]))
        out.next_id, out.seq = int(change["next_id"]), seq
    out.journal_bytes = position
    return out


def read_overlay_files(directory: Path) -> dict[str, dict[str, Any]]:
    """The checksummed files of the overlay in ``directory`` (``{}`` when there is none)."""
    replayed = _replay(directory)
    if replayed is None:
        return {}
    return {row["file"]: {"sha256": row["sha256"], "bytes": row["bytes"]} for row in replayed.rows}


def read_overlay(directory: Path) -> Overlay | None:
    """The overlay in ``directory``, or None when there is none."""
    replayed = _replay(directory)
    if replayed is None:
        return None
    items, vectors, files = [], [], {}
    for row in replayed.rows:
        path = directory / row["file"]
        if not path.is_file():
            raise ExportError(f"{directory}: the overlay names {row['file']}, which is missing")
        tensors = load_file(str(path))
        tokens, image = tensors.get("tokens"), tensors.get("image")
        items.append(PreparedItem(row["id"], row["text"], None if tokens is None else tokens.numpy(),
                                  None if image is None else image.numpy()))  # fmt: skip
        vectors.append(tensors["vector"])
        files[row["file"]] = {"sha256": row["sha256"], "bytes": row["bytes"]}
    return Overlay(
        next_id=replayed.next_id,
        removed=tuple(replayed.removed),
        ids=tuple(row["id"] for row in replayed.rows),
        internal=tuple(int(row["internal"]) for row in replayed.rows),
        items=tuple(items),
        vectors=torch.stack(vectors) if vectors else torch.zeros(0, 0),
        files=files,
        seq=replayed.seq,
        journal_bytes=replayed.journal_bytes,
        state_bytes=replayed.state_bytes,
        state_version=replayed.state_version,
    )


# -- writing ----------------------------------------------------------------------------------------------


def _spliced(head: dict[str, Any], key: str, rows: list[str], newline: str) -> str:
    """``head`` as JSON with ``key`` holding ``rows`` (JSON texts, made once per item and kept)."""
    text = json.dumps(head, sort_keys=True, ensure_ascii=False)
    body = ",".join(rows) if not newline else (",\n".join(["", *rows])[1:] + "\n" if rows else "")
    return text[:-1] + f', "{key}": [' + body + "]}"


def state_text(next_id: int, removed: tuple[int, ...], rows: list[str], seq: int = 0) -> str:
    """The snapshot's text: the state after ``seq`` changes, with each added item's row (its JSON text,
    ``rows``) on a line of its own."""
    head = {"format_version": OVERLAY_VERSION, "next_id": next_id, "removed": list(removed), "seq": seq}
    return _spliced(head, "items", rows, newline="\n") + "\n"


def journal_line(
    seq: int, next_id: int, removed: tuple[int, ...], dropped: tuple[int, ...], rows: list[str]
) -> str:
    """One change's journal line (one line: JSON escapes every newline of a text)."""
    head = {"seq": seq, "next_id": next_id, "removed": list(removed), "dropped": list(dropped)}
    return _spliced(head, "items", rows, newline="") + "\n"


def _row(raw: str, internal: int, item: PreparedItem, entry: dict[str, Any]) -> str:
    row = {"id": raw, "internal": internal, "text": item.text, "file": item_file(internal),
           "modality": modality_name(item.modality), "sha256": entry["sha256"],
           "bytes": entry["bytes"]}  # fmt: skip
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _write_item(directory: Path, internal: int, vector: torch.Tensor, item: PreparedItem) -> dict[str, Any]:
    """Write one item's file (to a temporary name, then renamed); its ``{"sha256", "bytes"}``."""
    tensors = {"vector": vector.contiguous()}
    if item.tokens is not None:
        tensors["tokens"] = torch.from_numpy(item.tokens.astype("int32"))
    if item.image is not None:
        tensors["image"] = torch.from_numpy(item.image.copy())
    data = safetensors_bytes(tensors)
    tmp = directory / ITEMS_DIR / f".{internal}.tmp-{os.getpid()}"
    tmp.write_bytes(data)
    os.replace(tmp, directory / item_file(internal))
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _append(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` in one write."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
    finally:
        os.close(fd)


def _cut(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (an uncommitted tail), if it is longer."""
    try:
        if path.stat().st_size > size:
            os.truncate(path, size)
    except FileNotFoundError:
        pass


def write_overlay(directory: Path, overlay: Overlay) -> Overlay:
    """Persist ``overlay``'s changes since its last write in ``directory`` (see the module for the order
    that keeps it whole); returns it with its new items' ``files`` entries and the bookkeeping updated.
    When it raises, the directory holds the last committed state and nothing this call wrote."""
    journal_path = directory / JOURNAL_FILE
    if not overlay.swept:
        (directory / ITEMS_DIR).mkdir(parents=True, exist_ok=True)
        _cut(journal_path, overlay.journal_bytes)  # a line cut short by a kill
    files = dict(overlay.files)
    start = len(overlay.internal)  # the new items: the suffix with no file yet
    while start > 0 and item_file(overlay.internal[start - 1]) not in files:
        start -= 1
    written: list[Path] = []
    seq = overlay.seq + 1
    try:
        new_rows = []
        for position in range(start, len(overlay.internal)):
            internal, item = overlay.internal[position], overlay.items[position]
            entry = _write_item(directory, internal, overlay.vectors[position], item)
            written.append(directory / item_file(internal))
            row = _row(overlay.ids[position], internal, item, entry)
            files[item_file(internal)] = {**entry, "row": row}
            new_rows.append(row)
        line = journal_line(seq, overlay.next_id, overlay.pending_removed, overlay.pending_dropped, new_rows)
        journal_bytes = overlay.journal_bytes + len(line.encode("utf-8"))
        snapshot = (
            overlay.state_bytes == 0
            or overlay.state_version != OVERLAY_VERSION
            or journal_bytes > max(COMPACT_MIN_BYTES, overlay.state_bytes)
        )
        if snapshot:
            rows = []
            for raw, internal, item in zip(overlay.ids, overlay.internal, overlay.items, strict=True):
                entry = files[item_file(internal)]
                if "row" not in entry:  # read from disk: its row, made once
                    entry = files[item_file(internal)] = {**entry, "row": _row(raw, internal, item, entry)}
                rows.append(entry["row"])
            text = state_text(overlay.next_id, overlay.removed, rows, seq)
            atomic_write_text(directory / STATE_FILE, text)  # the commit point
            state_bytes, journal_bytes = len(text.encode("utf-8")), 0
        else:
            state_bytes = overlay.state_bytes
            try:
                _append(journal_path, line)  # the commit point
            except BaseException:
                _cut(journal_path, overlay.journal_bytes)
                raise
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    if snapshot:
        _cut(journal_path, 0)  # its changes are in the snapshot (and skipped by number if not cut)
    for internal in overlay.pending_dropped:
        (directory / item_file(internal)).unlink(missing_ok=True)
    if snapshot or not overlay.swept:
        for path in (directory / ITEMS_DIR).iterdir():  # files no committed change names
            if f"{ITEMS_DIR}/{path.name}" not in files:
                path.unlink(missing_ok=True)
    return replace(
        overlay,
        files=files,
        seq=seq,
        journal_bytes=journal_bytes,
        state_bytes=state_bytes,
        state_version=OVERLAY_VERSION,
        pending_dropped=(),
        pending_removed=(),
        swept=True,
    )
