"""Atomic writes: a file or directory is either the old one or the complete new one, never half.

A directory cannot be swapped in one step (POSIX renames cannot exchange two directories), so
``atomic_directory`` moves the old one aside (``.<name>.old-<pid>``) before renaming the complete new one
in. A process killed between those two renames leaves no ``<name>`` but a complete ``.<name>.old-<pid>``;
``recover_directory`` puts it back on the next start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _old(target: Path) -> Path:
    return target.parent / f".{target.name}.old-{os.getpid()}"


def _tmp(target: Path) -> Path:
    return target.parent / f".{target.name}.tmp-{os.getpid()}"


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``target`` by renames.

    An exception inside the block leaves ``target`` as it was. An exception between the two renames
    (moving ``target`` aside, moving the new one in) puts the old ``target`` back before it propagates; a
    kill there leaves it moved aside, for ``recover_directory``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _old(target)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    try:
        _swap_in(tmp, target)
    except BaseException:
        if old.exists() and not target.exists():
            old.rename(target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _swap_in(tmp: Path, target: Path) -> None:
    # Its own function so that a test can fail exactly here, with the old directory moved aside.
    tmp.rename(target)


def recover_directory(target: Path) -> bool:
    """Undo what a process killed inside ``atomic_directory(target)`` left behind; True when ``target``
    was restored from its moved-aside copy.

    ``target`` missing and one or more ``.<name>.old-*`` copies present (killed between the renames): the
    most recent copy becomes ``target`` again. Copies left beside an existing ``target`` (killed after the
    new one was in place) and unfinished ``.<name>.tmp-*`` directories are removed. Call it in one
    process only, before anything reads ``target``."""
    target = Path(target)
    if not target.parent.is_dir():
        return False
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    restored = False
    if olds and not target.exists():
        olds.pop().rename(target)
        restored = True
    for leftover in [*olds, *target.parent.glob(f".{target.name}.tmp-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    return restored


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (readers see old or new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
