"""The ready grids under configs/bench/: each loads (every cell's TrainConfig and the report section check
out, bench.grid) and opens with the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from transrec.bench import load_grid

GRIDS = sorted((Path(__file__).parents[2] / "configs" / "bench").glob("*.yaml"))


@pytest.mark.parametrize("path", GRIDS, ids=lambda path: path.stem)
def test_each_ready_grid_loads_and_opens_with_its_command(path: Path):
    grid = load_grid(path)
    assert grid.cells()
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert path.read_text().startswith("# ")
    assert f"transrec bench configs/bench/{path.name}" in header
