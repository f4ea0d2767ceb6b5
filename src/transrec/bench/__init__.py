"""Benchmark grids: ``transrec bench GRID.yaml`` runs every cell of a grid (resumable, sharded) and
renders the papers' tables from the finished cells.

``grid`` reads a grid file, ``spec`` its parts, ``cells`` expands the cells, ``listing`` prints them for
``--dry-run``. ``runner`` runs them (``run_grid``, ``cell_states``), each kind as ``execute`` says, on the
named datasets ``datasets`` prepares, under the locks and states of ``state``, in the shares of ``shard``.
"""

from transrec.bench.cells import Cell
from transrec.bench.grid import Grid, load_grid
from transrec.bench.listing import format_cells

__all__ = ["Cell", "Grid", "format_cells", "load_grid"]
