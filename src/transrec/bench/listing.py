"""The ``--dry-run`` listing of a grid's cells: one line per cell and the count of each state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from transrec.bench.cells import Cell

#: The states of a cell as the runner reports them (``bench.state``), in the order the counts print.
STATES = ("done", "pending", "running", "resumable", "changed", "failed", "collapsed", "blocked", "locked")
COLUMNS = ("cell", "kind", "dataset", "depends on", "state")


def format_cells(cells: Sequence[Cell], states: Mapping[str, str]) -> str:
    """A text table (cell key, kind, dataset, dependency, state) in the order of ``cells``, then a line
    ``N cells: a done, b pending, ...`` (states in ``STATES`` order, others after them alphabetically).
    ``states`` maps cell keys to states; a cell it lacks shows as ``unknown``."""
    rows = [(cell.key, cell.kind, cell.dataset, cell.depends_on or "-", states.get(cell.key, "unknown"))
            for cell in cells]  # fmt: skip
    widths = [max(len(row[i]) for row in (COLUMNS, *rows)) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
             for row in (COLUMNS, *rows)]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    counts = Counter(row[4] for row in rows)
    order = [s for s in STATES if s in counts] + sorted(set(counts) - set(STATES))
    noun = "cell" if len(rows) == 1 else "cells"
    summary = f"{len(rows)} {noun}" + (": " + ", ".join(f"{counts[s]} {s}" for s in order) if order else "")
    return "\n".join([*lines, "", summary])
