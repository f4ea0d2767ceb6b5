"""MoRec style: ``<name>_users.tsv``, ``<name>_items.tsv`` and images in a folder or an LMDB.

Both files are tab separated, without a header::

    mind_users.tsv    user TAB the user's item ids separated by spaces, oldest first
        U8125	N3112 N10399 N12959
    mind_items.tsv    item id TAB title TAB abstract (the abstract column may be absent)
        N3112	The 50 best states for retirement	Where your money goes furthest.

The users file has no times, only the order: each interaction's timestamp is its position in the file
(the first item of the first line is 0, the next 1, ...), so every user's items stay in their listed
order. Images are either files ``<id>.jpg`` in a folder, or the values of an LMDB whose keys are the item
ids (UTF-8) and whose values are the encoded image files (JPEG/PNG bytes).

The LMDBs written by the MoRec / NineRec scripts hold *pickled* Python objects instead; transrec refuses
them, because unpickling a data file can run arbitrary code. Convert such an LMDB once, with code you
trust, into one whose values are JPEG bytes (or into ``<id>.jpg`` files and use ``image_dir``).

Options:
    name: the file prefix; default the folder's name.
    users_file, items_file: file names inside the folder (or absolute paths); default
        ``<name>_users.tsv`` and ``<name>_items.tsv``.
    text: ``"title"`` (default) or ``"title+abstract"`` (joined by a space).
    image_dir: the folder of images; relative paths are taken inside the dataset folder. Default:
        ``<folder>/images`` when it exists and no ``image_lmdb`` is given, else no images.
    image_pattern: the image file name in ``image_dir``, ``image_pattern.format(id=item_id)`` (default
        ``{id}.jpg``).
    image_lmdb: an LMDB environment (a folder with ``data.mdb``, or the file itself; relative paths are
        taken inside the dataset folder) holding the images; needs the optional ``lmdb`` package
        (``pip install transrec[lmdb]``). Opened read-only, without locking.
    on_bad_row: "error" (default) or "skip".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transrec.config import ConfigError
from transrec.data.errors import DataError
from transrec.data.loaders import LOADERS
from transrec.data.loaders.common import (
    BadRowPolicy,
    bad_row,
    check_policy,
    normalise_text,
    read_rows,
    require_file,
)
from transrec.data.report import PreparationReport
from transrec.data.schema import FileImage, ImageRef, RawDataset, RawInteractions, RawItems

TEXT_CHOICES = ("title", "title+abstract")
PICKLE_HINT = (
    "is a Python pickle (as the MoRec/NineRec generate_lmdb scripts write), which transrec does not load: "
    "unpickling a data file can run arbitrary code. Convert the LMDB once, with code you trust, so that "
    "each value is the image's JPEG (or PNG) bytes under the same key, or write the images out as <id>.jpg "
    "files and pass image_dir"
)


class LmdbReader:
    """One read-only LMDB environment, opened on first use and shared by the ``LmdbImage`` refs of a db.

    A pickled copy (sent to a worker process) does not carry the open environment: it reopens it there on
    first use. py-lmdb allows one open environment per path in a process, so two readers of the same LMDB
    cannot be open at once in one process: ``close()`` one first.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._env: Any = None

    def _open(self) -> Any:
        if self._env is None:
            lmdb = _import_lmdb()
            try:
                self._env = lmdb.open(
                    str(self.path), readonly=True, lock=False, readahead=False, subdir=self.path.is_dir()
                )
            except lmdb.Error as err:
                hint = ""
                if "already open" in str(err):
                    # py-lmdb allows one open environment per path and process.
                    hint = "; another reader of it is open in this process: close() it, or drop its dataset"
                raise DataError(f"cannot open the LMDB ({err}){hint}", self.path) from err
        return self._env

    def get(self, key: str) -> bytes | None:
        with self._open().begin(buffers=False) as txn:
            value = txn.get(key.encode("utf-8"))
        if value is not None and value[:1] == b"\x80":
            raise DataError(f"the record {key!r} {PICKLE_HINT}", self.path)
        return value

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_env": None}


@dataclass(frozen=True, eq=False)
class LmdbImage:
    """An image stored in an LMDB under its item id."""

    reader: LmdbReader
    key: str

    def read_bytes(self) -> bytes:
        value = self.reader.get(self.key)
        if value is None:
            raise FileNotFoundError(f"no record {self.key!r} in the LMDB {self.reader.path}")
        return value

    def describe(self) -> str:
        return f"{self.reader.path}[{self.key}]"


def _import_lmdb() -> Any:
    try:
        import lmdb
    except ImportError:
        raise ImportError(
            "reading images from an LMDB needs the lmdb package: pip install 'transrec[lmdb]' (or lmdb)"
        ) from None
    return lmdb


@LOADERS.register("morec")
def load_morec(
    path: Path,
    *,
    name: str | None = None,
    users_file: str | None = None,
    items_file: str | None = None,
    text: str = "title",
    image_dir: str | Path | None = None,
    image_pattern: str = "{id}.jpg",
    image_lmdb: str | Path | None = None,
    on_bad_row: BadRowPolicy = "error",
) -> RawDataset:
    check_policy(on_bad_row)
    if text not in TEXT_CHOICES:
        raise ConfigError(f"text must be one of {', '.join(TEXT_CHOICES)}, got {text!r}")
    if image_dir is not None and image_lmdb is not None:
        raise ConfigError("give image_dir or image_lmdb, not both")
    path = Path(path)
    name = name or path.name
    report = PreparationReport()
    users_path = require_file(path / (users_file or f"{name}_users.tsv"), "MoRec users file")
    items_path = require_file(path / (items_file or f"{name}_items.tsv"), "MoRec items file")
    interactions = _read_users(users_path, on_bad_row, report)
    ids, texts = _read_items(items_path, text == "title+abstract", on_bad_row, report)

    images: list[ImageRef | None] = [None] * len(ids)
    notes = ["no times in the users file: timestamps are positions in it"]
    if image_lmdb is not None:
        lmdb_path = path / image_lmdb
        if not lmdb_path.exists():
            raise DataError("image LMDB not found (image_lmdb)", lmdb_path)
        reader = LmdbReader(lmdb_path)
        _refuse_pickled(reader, ids)
        images = [LmdbImage(reader, item) for item in ids]
    else:
        folder = path / "images" if image_dir is None else path / image_dir
        if folder.is_dir():
            images = [FileImage(folder / image_pattern.format(id=item)) for item in ids]
        elif image_dir is not None:
            raise DataError("image folder not found (image_dir)", folder)
        else:
            notes.append("no image folder or LMDB: items are text only")
    items = RawItems(ids=ids, texts=texts, images=images)
    return RawDataset(
        name=name,
        interactions=interactions,
        items=items,
        report=report,
        files=[users_path, items_path],
        notes=notes,
    )


def _refuse_pickled(reader: LmdbReader, ids: list[str], probe: int = 100) -> None:
    """Fail at load time, not hours into preparation, on an LMDB of pickles (``reader.get`` raises).

    The environment is closed again afterwards, so that worker processes forked later can open their own.
    """
    try:
        for item in ids[:probe]:
            if reader.get(item) is not None:
                return
    finally:
        reader.close()


def _read_users(path: Path, on_bad_row: BadRowPolicy, report: PreparationReport) -> RawInteractions:
    users: list[str] = []
    items: list[str] = []
    for line, fields in read_rows(path, delimiter="\t", quoting=False):
        if len(fields) != 2:
            bad_row(
                f"expected 2 tab-separated fields (user, items), found {len(fields)}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        user, sequence = fields[0].strip(), fields[1].split()
        if not user or not sequence:
            bad_row("empty user id or empty item list", path, line, on_bad_row, report)
            continue
        users.extend([user] * len(sequence))
        items.extend(sequence)
    return RawInteractions.from_lists(users, items, [float(i) for i in range(len(items))])


def _read_items(
    path: Path, with_abstract: bool, on_bad_row: BadRowPolicy, report: PreparationReport
) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for line, fields in read_rows(path, delimiter="\t", quoting=False):
        if len(fields) not in (2, 3):
            bad_row(
                f"expected 2 or 3 tab-separated fields (id, title, abstract), found {len(fields)}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        item = fields[0].strip()
        if not item:
            bad_row("empty item id", path, line, on_bad_row, report)
            continue
        if item in seen:
            report.add("duplicate_item", example=f"{path.name}:{line}: item {item}")
            continue
        seen.add(item)
        parts = fields[1:] if with_abstract else fields[1:2]
        ids.append(item)
        texts.append(" ".join(t for t in map(normalise_text, parts) if t))
    return ids, texts
