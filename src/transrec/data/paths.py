"""Where transrec keeps fetched and prepared data, and how a dataset name becomes a directory.

data_root()                   # $TRANSREC_HOME, else ~/.cache/transrec
resolve_dataset("ml-100k")    # ./ml-100k if it is a directory, else <data_root>/prepared/ml-100k
"""

from __future__ import annotations

import os
from pathlib import Path


def data_root(explicit: str | Path | None = None) -> Path:
    """Where fetched and prepared data live: ``explicit``, else $TRANSREC_HOME, else ~/.cache/transrec."""
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("TRANSREC_HOME", Path.home() / ".cache" / "transrec")).expanduser()


def resolve_dataset(name_or_path: str | Path) -> Path:
    """A prepared dataset's directory: the path itself when it exists, else, for a relative path, the
    same path under the folder ``transrec data prepare`` writes to by default (``<data_root>/prepared``).
    A name found in neither place is returned as given, so the caller's error names what the user wrote."""
    path = Path(name_or_path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    prepared = data_root() / "prepared" / path
    return prepared if prepared.exists() else path
