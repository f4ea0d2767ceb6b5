"""Loaders for the real dataset formats (SPEC section 3), one file per format, one registry.

A loader is a function ``load(path, **options) -> RawDataset``. ``path`` is the dataset's folder (or
its main file); options are format specific and documented in each loader's docstring. Every loader
takes ``on_bad_row`` ("error": refuse a malformed row with a message naming the file, the line and the
problem; "skip": count it in the report and go on).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transrec.data.schema import RawDataset
from transrec.registry import Registry

Loader = Callable[..., RawDataset]

LOADERS: Registry[Loader] = Registry("data format")


def load_raw(format: str, path: str | Path, **options: Any) -> RawDataset:
    """Read a dataset in one of the registered formats (``LOADERS.names()``)."""
    _register_builtin_loaders()
    loader = LOADERS.get(format)
    return loader(Path(path), **options)


def _register_builtin_loaders() -> None:
    # Imported here, not at module import, so that `transrec.data.loaders` stays cheap to import and
    # each loader module registers itself exactly once.
    from transrec.data import movielens  # noqa: F401
    from transrec.data.loaders import amazon, hm, mind, morec, ninerec, recbole, tabular  # noqa: F401
