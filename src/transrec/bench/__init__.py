"""Benchmark grids: ``transrec bench GRID.yaml`` runs every cell of a grid (resumable, sharded) and
renders the papers' tables from the finished cells.

``grid`` reads a grid file, ``spec`` its parts, ``cells`` expands the cells, ``listing`` prints them for
``--dry-run``.
"""

from transrec.bench.cells import Cell
from transrec.bench.grid import Grid, load_grid
from transrec.bench.listing import format_cells

__all__ = ["Cell", "Grid", "format_cells", "load_grid"]
