"""write_report end to end on a real grid (bench.grid.Grid) whose cell directories the test writes by hand:
cells.csv/parquet, tables.md with the paired significance of evaluation.significance, and the PNGs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from transrec.bench.grid import Grid
from transrec.bench.report import ReportInputs, write_report
from transrec.config import ConfigError
from transrec.evaluation.significance import hit_per_user, ndcg_per_user, paired_bootstrap

from .report_cells import write_cell

RESAMPLES = 200
USERS = 60
ITEM = {"IDRec": {"model.item_encoder": "id"}, "Text": {"model.item_encoder": "id", "model.d_model": 32}}
REPORT = {
    "seed_axis": "seed",
    "bootstrap_resamples": RESAMPLES,
    "tables": [
        {"title": "All users", "stage": "finetune", "rows": ["item"], "columns": ["transfer"],
         "metric": "NDCG@10", "filter": {"user_fraction": 1.0},
         "improvement": {"axis": "transfer", "of": "HasPT", "over": "NoPT"}, "significance": True},
        {"title": "New-item users", "stage": "finetune", "rows": ["item"], "columns": ["transfer"],
         "metric": "new/HR@10", "filter": {"user_fraction": 1.0},
         "improvement": {"axis": "transfer", "of": "HasPT", "over": "NoPT"}, "significance": True},
    ],
    "plots": [
        {"kind": "convergence", "stage": "finetune", "series": ["transfer"], "metric": "NDCG@10",
         "filter": {"item": "IDRec", "user_fraction": 1.0}},
        {"kind": "scaling", "stage": "finetune", "x": "user_fraction", "series": ["transfer"],
         "metric": "NDCG@10", "filter": {"item": "Text"}, "log_x": True, "name": "scaling"},
    ],
}  # fmt: skip


def grid(tmp_path, report=REPORT) -> Grid:
    return Grid.from_dict({
        "name": "g", "description": "a hand-written grid", "output_dir": str(tmp_path / "out"),
        "datasets": {"source": {"builder": "synthetic", "part": "source"},
                     "target": {"builder": "synthetic", "part": "target"}},
        "base": {"model": {"d_model": 16, "max_len": 8}, "epochs": 3},
        "stages": [
            {"name": "pretrain", "dataset": "source", "axes": {"seed": [0, 1]}},
            {"name": "finetune", "dataset": "target", "from": "pretrain",
             "axes": {"item": ITEM, "transfer": {"NoPT": {"from": None}, "HasPT": {}},
                      "user_fraction": [0.5, 1.0], "seed": [0, 1]}},
        ],
        "report": report,
    })  # fmt: skip


NEW = np.arange(USERS) % 3 == 0  # every third test user has a new item as its target


def ranks_of(labels: dict[str, str]) -> np.ndarray:
    """Ranks 1..200 per user: HasPT of Text far better than NoPT; HasPT of IDRec about as good."""
    seed = int(labels["seed"])
    rng = np.random.default_rng([seed, len(labels["item"]), len(labels["transfer"])])
    ranks = rng.integers(1, 30, size=USERS)
    if labels["transfer"] == "HasPT" and labels["item"] == "Text":
        ranks = np.maximum(1, ranks // 4)
    return ranks


def write_grid_cells(g: Grid, skip=()) -> dict[str, np.ndarray]:
    """Every finetune cell but ``skip``, with metrics consistent with its ranks; returns the ranks by key.
    The IDRec/HasPT seed-1 cell stores its users in another order (the report pairs users by index)."""
    out = {}
    for cell in g.cells():
        if cell.stage != "finetune" or cell.key in skip:
            continue
        labels = dict(cell.labels)
        ranks = ranks_of(labels)
        users = np.arange(USERS)
        stored_users, stored_ranks, stored_new = users, ranks, NEW
        if labels["item"] == "IDRec" and labels["transfer"] == "HasPT" and labels["seed"] == "1":
            order = np.random.default_rng(5).permutation(USERS)
            stored_users, stored_ranks, stored_new = users[order], ranks[order], NEW[order]
        metrics = {"NDCG@10": float(ndcg_per_user(ranks).mean()),
                   "HR@10": float(hit_per_user(ranks).mean()),
                   "new/HR@10": float(hit_per_user(ranks[NEW]).mean()),
                   "new/users": int(NEW.sum())}  # fmt: skip
        curve = [0.1, 0.2, 0.15] if labels["transfer"] == "NoPT" else [0.2, 0.3, 0.25]
        planned = write_cell(g.output_dir, cell.stage, labels, metrics, config_hash=g.config_hash(cell),
                             ranks=stored_ranks, users=stored_users, subsets={"new": stored_new},
                             curve=curve)  # fmt: skip
        assert planned.key == cell.key
        out[cell.key] = ranks
    return out


def expected_p(ranks: dict[str, np.ndarray], item: str, per_user, mask=None) -> str:
    def side(transfer):
        keys = [f"finetune/item={item},transfer={transfer},user_fraction=1.0,seed={s}" for s in (0, 1)]
        return np.stack([per_user(ranks[k])[mask if mask is not None else slice(None)] for k in keys])

    result = paired_bootstrap(side("HasPT"), side("NoPT"), n_resamples=RESAMPLES, seed=0)
    floor = 1 / (RESAMPLES + 1)
    p = f"p≤{floor:.1g}" if result.p_value <= floor * (1 + 1e-9) else f"p={result.p_value:.3f}"
    return p, result


def test_write_report_collects_tabulates_tests_and_plots(tmp_path):
    g = grid(tmp_path)
    ranks = write_grid_cells(g)
    paths = write_report(g)
    report = tmp_path / "out" / "report"
    names = ["cells.csv", "cells.parquet", "tables.md", "01-convergence-finetune.png", "scaling.png"]
    assert [p.name for p in paths] == names
    with (report / "cells.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16
    assert rows[0]["key"] == "finetune/item=IDRec,transfer=NoPT,user_fraction=0.5,seed=0"
    columns = ["grid", "stage", "key", "seed", "item", "transfer", "user_fraction", "status", "seconds"]
    assert list(rows[0])[:9] == columns
    assert rows[0]["epochs_run"] == "3" and rows[0]["best_epoch"] == "2"

    tables = (report / "tables.md").read_text()
    assert tables.startswith("# g\n\na hand-written grid\n\nCells done: 16 of 18.\n")
    # The improvement cell: the means' ratio, with the p-value of paired_bootstrap called directly.
    for item in ("IDRec", "Text"):
        p, result = expected_p(ranks, item, ndcg_per_user)
        star = "*" if result.p_value < 0.05 else ""
        assert f"{round(result.relative, 6) + 0.0:+.1%}{star} ({p}) |" in tables.split("### New-item")[0]
        # The footnote gives the paired difference per user, its interval and the pairs it rests on.
        low, high = result.ci_low + 0.0, result.ci_high + 0.0
        line = (f"- item={item}: HasPT - NoPT = {result.difference + 0.0:+.4f} (95% CI [{low:+.4f}, "
                f"{high:+.4f}]) per user, 2 seed(s) x {USERS} users, {p}.\n")  # fmt: skip
        assert line in tables
    assert expected_p(ranks, "Text", ndcg_per_user)[1].p_value < 0.05  # the data make Text significant
    assert expected_p(ranks, "IDRec", ndcg_per_user)[1].p_value > 0.05  # and IDRec not
    # A subset metric pairs the subset's users only.
    subset = tables.split("### New-item")[1]
    for item in ("IDRec", "Text"):
        p, _ = expected_p(ranks, item, hit_per_user, NEW)
        assert f"({p})" in subset.split(f"| {item} |")[1].split("\n")[0]
    assert expected_p(ranks, "IDRec", hit_per_user)[0] != expected_p(ranks, "IDRec", hit_per_user, NEW)[0]

    for name in ("01-convergence-finetune.png", "scaling.png"):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_missing_and_changed_cells_show_as_missing(tmp_path):
    g = grid(tmp_path)
    missing = "finetune/item=Text,transfer=NoPT,user_fraction=1.0,seed=1"
    write_grid_cells(g, skip={missing})
    # A cell run under a config the grid no longer has counts as not finished.
    changed = g.cell("finetune/item=IDRec,transfer=HasPT,user_fraction=1.0,seed=0")
    state = Path(g.output_dir) / changed.key / "cell.json"
    state.write_text(state.read_text().replace(g.config_hash(changed), "0" * 64))
    write_report(g)
    tables = (tmp_path / "out" / "report" / "tables.md").read_text()
    first = tables.split("### New-item")[0]
    assert "| IDRec | " in first and " (n=1) |" in first.split("| IDRec |")[1].split("\n")[0]
    assert "| Text | " in first and " (n=1) |" in first.split("| Text |")[1].split("\n")[0]
    assert "- n=1: only 1 of the 2 seed labels finished." in first
    assert "Cells done: 14 of 18." in tables


def test_a_report_naming_an_unknown_axis_fails_before_anything_is_written(tmp_path):
    bad = {"tables": [dict(REPORT["tables"][0], rows=["colour"])]}
    inputs = ReportInputs.from_grid(grid(tmp_path))
    inputs.report = bad
    with pytest.raises(
        ConfigError, match=r"report.tables\[0\].rows\[0\]: stage 'finetune' has no axis 'colour'"
    ):
        write_report(inputs)
    assert not (tmp_path / "out" / "report").exists()
