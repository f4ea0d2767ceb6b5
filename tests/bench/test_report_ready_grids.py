"""Every ready grid under configs/bench renders its report: each cell directory written by hand (metrics
consistent with random ranks, the new-item subset stored), then write_report; every table the grid names
is there, with numbers, and every significance test it asks for is computed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transrec.bench.grid import load_grid
from transrec.bench.report import ReportInputs, write_report
from transrec.evaluation.significance import hit_per_user, ndcg_per_user

ROOT = Path(__file__).resolve().parents[2]
GRIDS = sorted((ROOT / "configs" / "bench").glob("*.yaml"))
USERS = 40


def fake_cell(directory: Path, config_hash: str, rng: np.random.Generator, subsets: set[str]) -> None:
    ranks = rng.integers(1, 60, size=USERS)
    masks = {name: np.arange(USERS) % (3 + i) == 0 for i, name in enumerate(sorted(subsets))}
    metrics: dict[str, float] = {}
    for k in (1, 5, 10, 20, 50):
        for prefix, mask in (("", slice(None)), *((f"{n}/", m) for n, m in masks.items())):
            metrics[f"{prefix}HR@{k}"] = float(hit_per_user(ranks[mask], k).mean())
            metrics[f"{prefix}NDCG@{k}"] = float(ndcg_per_user(ranks[mask], k).mean())
    metrics.update({f"{name}/users": int(mask.sum()) for name, mask in masks.items()})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cell.json").write_text(
        json.dumps({"status": "done", "config_hash": config_hash, "seconds": 1})
    )
    (directory / "test_metrics.json").write_text(json.dumps(metrics))
    (directory / "result.json").write_text(json.dumps({"epochs_run": 2, "best_epoch": 1}))
    curve = [{"epoch": e, **{f"valid_{k}": v / e for k, v in metrics.items()}} for e in (1, 2)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curve))
    np.savez(directory / "test_ranks.npz", users=np.arange(USERS), targets=np.ones(USERS, dtype=np.int64),
             ranks=ranks, **{f"subset_{n}": m for n, m in masks.items()})  # fmt: skip


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_every_ready_grid_renders_its_tables_and_plots(path, tmp_path):
    grid = load_grid(path)
    rng = np.random.default_rng(0)
    report = grid.report or {}
    metrics = [t["metric"] for t in report.get("tables", [])] + [p["metric"] for p in report.get("plots", [])]
    subsets = {metric.split("/")[0] for metric in metrics if "/" in metric}
    for cell in grid.cells():
        fake_cell(tmp_path / cell.key, grid.config_hash(cell), rng, subsets)
    inputs = ReportInputs.from_grid(grid, tmp_path)
    inputs.report = {**(inputs.report or {}), "bootstrap_resamples": 100}
    paths = write_report(inputs)
    tables = (tmp_path / "report" / "tables.md").read_text()
    assert f"Cells done: {len(grid.cells())} of {len(grid.cells())}." in tables
    for table in report.get("tables", []):
        assert f"### {table['title']}\n" in tables
    assert "–" not in tables and "p n/a" not in tables  # every cell is there, every test computed
    assert tables.count(" (p=") >= sum(bool(t.get("significance")) for t in report.get("tables", []))
    assert len([p for p in paths if p.suffix == ".png"]) == len(report.get("plots", []))
