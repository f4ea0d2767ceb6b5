"""``transrec demo --quick`` end to end on the generated MovieLens-100K stand-in, with no network: every
stage, the tables, the tests, the plots, the per-user ranks behind the new-item column, the grid's
report, and a second run that trains nothing."""

import json

import numpy as np
import pytest

from transrec.bench.datasets import recorded_dataset
from transrec.cli.main import main
from transrec.data.prepared import PreparedDataset
from transrec.evaluation.significance import ndcg_per_user
from transrec.training.trainer import TEST_RANKS_FILE


def run_quick_demo(root, out, monkeypatch, capsys) -> None:
    """``transrec demo --quick`` with the data root ``root`` as ``$TRANSREC_HOME``; checks what it prints
    and writes."""
    monkeypatch.setenv("TRANSREC_HOME", str(root))
    assert main(["demo", "--quick", "--quiet", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    # MovieLens-100K after 5-core (the stand-in is built to give the same figures).
    assert "943 users, 1,349 items, 99,287 interactions" in printed
    for row in ("| IDRec |", "| TS |", "| NoPT |", "| HasPT |", "| Zero-shot |", "| Popularity |",
                "| Method | 50% of users | 100% of users |"):  # fmt: skip
        assert row in printed, row
    assert "HasPT and NoPT" in printed or "HasPT beats NoPT" in printed or "HasPT trails NoPT" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["methods"]["HasPT"]["seeds"] == [0, 1] and results["source"]["seeds"] == [0, 1]
    assert len(results["significance"]) == 4  # 3 on all users or new-item users, 1 at 50% of the users
    assert results["stops"]["runs"] == 2 + 4 * 2 + 3  # sources, the 4 trained methods, the 50% grid
    for kind in ("convergence", "scarcity"):
        assert (out / f"{kind}.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Conclusions" in (out / "results.md").read_text()

    # The new-item column: the stored ranks of the test users whose target the protocol made new, read
    # from the cells of the demo's grid (their folders named as `transrec bench` names them).
    target = PreparedDataset(recorded_dataset(out, "target")["path"])
    assert target.path.name == "target-new0.1" and target.path.parent.name == "ml-100k-demo-text-40u-s0"
    new = target.item_is_new[target.split.test_targets]
    assert results["users"] == {"all": target.n_users, "new": int(new.sum())} and new.any()
    cell = "target/method=IDRec,user_fraction=1.0,seed={}"
    ranks = [np.load(out / cell.format(seed) / TEST_RANKS_FILE)["ranks"] for seed in (0, 1)]
    expected = np.mean([ndcg_per_user(r)[new].mean() for r in ranks])
    assert results["methods"]["IDRec"]["mean"]["new/NDCG@10"] == pytest.approx(expected)
    # The grid's own report, as `transrec bench --report` writes it.
    tables = (out / "report" / "tables.md").read_text()
    assert "Cells done: 16 of 16." in tables and "Demo: target scarcity" in tables
    assert (out / "report" / "cells.csv").read_text().count("\n") == 1 + 16


def test_demo_quick(ml100k_root, tmp_path, monkeypatch, capsys, offline):
    """The quick demo end to end on the generated stand-in, found in $TRANSREC_HOME, with no network; run
    again, it trains nothing (every cell is done) and reports the same numbers."""
    out = tmp_path / "demo"
    run_quick_demo(ml100k_root, out, monkeypatch, capsys)
    first = json.loads((out / "results.json").read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("transrec.training.trainer.train", no_training)
    run_quick_demo(ml100k_root, out, monkeypatch, capsys)
    again = json.loads((out / "results.json").read_text())
    assert again["methods"] == first["methods"] and again["significance"] == first["significance"]
    assert again["stage_seconds"]["source pre-training"] == 0.0  # nothing ran in this invocation


@pytest.mark.slow
def test_demo_quick_on_the_real_movielens(real_ml100k_root, tmp_path, monkeypatch, capsys):
    run_quick_demo(real_ml100k_root, tmp_path / "demo", monkeypatch, capsys)
