"""Loaders for the real dataset formats (SPEC section 3), one file per format, one registry.

A loader is a function ``load(path, **options) -> RawDataset``. ``path`` is the dataset's folder (or
its main file); options are format specific and documented in each loader's docstring. Every loader
takes ``on_bad_row`` ("error": refuse a malformed row with a message naming the file, the line and the
problem; "skip": count it in the report and go on).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transrec.config import ConfigError
from transrec.data.schema import RawDataset
from transrec.errors import MissingPathError
from transrec.registry import Registry

Loader = Callable[..., RawDataset]

LOADERS: Registry[Loader] = Registry("data format")


def load_raw(format: str, path: str | Path, **options: Any) -> RawDataset:
    """Read a dataset in one of the registered formats (``LOADERS.names()``). Raises MissingPathError
    when ``path`` does not exist and ConfigError naming any option the format's loader does not take."""
    _register_builtin_loaders()
    loader = LOADERS.get(format)
    if not Path(path).exists():
        raise MissingPathError(f"{path} does not exist (the {format} dataset to read)")
    known = _option_names(loader)
    unknown = sorted(set(options) - known) if known is not None else []
    if unknown:
        options_text = ", ".join(sorted(known)) or "none"
        raise ConfigError(
            f"the {format} loader has no option(s) {', '.join(unknown)}; its options: {options_text}"
        )
    return loader(Path(path), **options)


def _option_names(loader: Loader) -> set[str] | None:
    """The keyword options ``loader`` takes after its path (None: it takes any, through ``**kwargs``)."""
    parameters = list(inspect.signature(loader).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _register_builtin_loaders() -> None:
    # Imported here, not at module import, so that `transrec.data.loaders` stays cheap to import and
    # each loader module registers itself exactly once.
    from transrec.data import movielens  # noqa: F401
    from transrec.data.loaders import amazon, hm, mind, morec, ninerec, recbole, tabular  # noqa: F401
