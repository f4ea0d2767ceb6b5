"""The report of a grid the runner really ran (the tiny grid of tests/bench/tiny_grids.py, about a second a
cell): every printed number is recomputed here from the cells' own files, apart from bench.collect."""

from __future__ import annotations

import csv
import json
import statistics

import numpy as np
import pytest

from tests.bench.tiny_grids import CELLS, tiny_grid
from transrec.bench.report import write_report
from transrec.bench.runner import run_grid
from transrec.evaluation.significance import ndcg_per_user, paired_bootstrap

REPORT = {
    "bootstrap_resamples": 300,
    "tables": [
        {"title": "Fine-tuning", "stage": "finetune", "rows": ["transfer"], "metric": "NDCG@10",
         "improvement": {"axis": "transfer", "of": "HasPT", "over": "NoPT"}, "significance": True},
        {"title": "Zero-shot", "stage": "zeroshot", "metric": "HR@10"},
        {"title": "Popularity", "stage": "popularity", "metric": "NDCG@10"},
    ],
    "plots": [{"kind": "convergence", "stage": "finetune", "series": ["transfer"], "metric": "NDCG@10"}],
}  # fmt: skip


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_report") / "tiny"
    grid = tiny_grid(out, report=REPORT)
    assert run_grid(grid, progress=False).ok
    return out, write_report(grid)


def metric(out, key, name):
    return json.loads((out / key / "test_metrics.json").read_text())[name]


def test_the_report_of_a_run_grid_prints_the_cells_own_numbers(reported):
    out, paths = reported
    assert [p.name for p in paths] == [
        "cells.csv",
        "cells.parquet",
        "tables.md",
        "01-convergence-finetune.png",
    ]
    tables = (out / "report" / "tables.md").read_text()
    assert "Cells done: 9 of 9." in tables
    means = {}
    for transfer in ("NoPT", "HasPT"):
        values = [metric(out, f"finetune/transfer={transfer},seed={s}", "NDCG@10") for s in (0, 1)]
        means[transfer] = statistics.fmean(values)
        assert f"| {transfer} | {means[transfer]:.4f} ± {statistics.stdev(values):.4f} |" in tables

    # The improvement row, with the p-value of the paired bootstrap over the cells' stored ranks.
    def ranks(transfer, seed):
        return np.load(out / f"finetune/transfer={transfer},seed={seed}" / "test_ranks.npz")["ranks"]

    per_user = {t: np.stack([ndcg_per_user(ranks(t, s)) for s in (0, 1)]) for t in ("NoPT", "HasPT")}
    result = paired_bootstrap(per_user["HasPT"], per_user["NoPT"], n_resamples=300, seed=0)
    floor = 1 / 301
    p = f"p≤{floor:.1g}" if result.p_value <= floor * (1 + 1e-9) else f"p={result.p_value:.3f}"
    star = "*" if result.p_value < 0.05 else ""
    change = round((means["HasPT"] - means["NoPT"]) / means["NoPT"], 6) + 0.0
    assert f"| HasPT vs NoPT | {change:+.1%}{star} ({p}) |" in tables
    zero = [metric(out, f"zeroshot/seed={s}", "HR@10") for s in (0, 1)]
    assert f"| zeroshot | {statistics.fmean(zero):.4f} ± {statistics.stdev(zero):.4f} |" in tables
    assert f"| popularity | {metric(out, 'popularity/default', 'NDCG@10'):.4f} |" in tables


def test_cells_csv_has_a_row_per_cell_with_the_trainers_epochs(reported):
    out, _ = reported
    with (out / "report" / "cells.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:8] == [
        "grid",
        "stage",
        "key",
        "seed",
        "transfer",
        "status",
        "seconds",
        "epochs_run",
    ]
    assert [row["key"] for row in rows] == CELLS
    row = rows[2]
    result = json.loads((out / row["key"] / "result.json").read_text())
    assert row["epochs_run"] == str(result["epochs_run"]) and row["best_epoch"] == str(result["best_epoch"])
    assert float(row["NDCG@10"]) == metric(out, row["key"], "NDCG@10")
