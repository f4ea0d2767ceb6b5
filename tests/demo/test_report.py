"""The demo's report rendered from a fabricated results.json: table numbers, missing cells, the scarcity
table, the significance lines and the conclusions generated from the numbers."""

import json

import pytest

from transrec.demo.report import main_table, render, scarcity_table, write_results
from transrec.demo.summary import comparison_sentence, conclusions, format_p


def comparison(p_value, difference=0.012, relative=0.10, users="all", fraction=1.0, a="HasPT", b="NoPT"):
    return {"a": a, "b": b, "users": users, "fraction": fraction, "metric": "NDCG@10", "seeds": [0, 1, 2],
            "mean_a": 0.132, "mean_b": 0.120, "difference": difference, "relative": relative,
            "ci_low": 0.004, "ci_high": 0.020, "relative_ci_low": 0.033, "relative_ci_high": 0.167,
            "p_value": p_value, "n": 300, "n_seeds": 3, "n_users": 100, "n_resamples": 10000,
            "confidence": 0.95}  # fmt: skip


def method(means, stds, seeds, stop=("patience",) * 3, epochs=(7, 9, 8)):
    keys = ("HR@10", "NDCG@10", "new/HR@10", "new/NDCG@10")
    return {
        "seeds": list(range(seeds)),
        "mean": dict(zip(keys, means, strict=True)),
        "std": dict(zip(keys, stds, strict=True)),
        "epochs_run": list(epochs[:seeds]),
        "best_epoch": [e - 3 for e in epochs[:seeds]],
        "stop": list(stop[:seeds]),
        "valid_ndcg10_per_epoch": [[0.01 * i for i in range(1, e + 1)] for e in epochs[:seeds]],
    }


def point(values, seeds):
    return {"seeds": seeds, "per_seed": values, "mean": sum(values) / len(values), "std": 0.001,
            "min": min(values), "max": max(values)} if values else \
        {"seeds": [], "per_seed": [], "mean": None, "std": None, "min": None, "max": None}  # fmt: skip


SUMMARY = {
    "users": {"all": 100, "new": 12},
    "methods": {
        "Popularity": method((0.1, 0.05, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), 1, stop=("",), epochs=(0,)),
        "IDRec": method((0.2, 0.1, 0.0, 0.002), (0.01, 0.005, 0.0, 0.001), 3),
        "NoPT": method((0.25, 0.12, 0.1, 0.05), (0.02, 0.004, 0.03, 0.01), 3),
        # One seed collapsed and the new-item cells of the others are missing: shown as missing.
        "HasPT": method((0.27, 0.132, None, None), (0.01, 0.003, None, None), 2, stop=("patience", "cap")),
    },
    "source": {
        "seeds": [0, 1, 2],
        "test_ndcg10": [0.11, 0.12, None],
        "epochs_run": [10, 12, 3],
        "best_epoch": [7, 9, 1],
        "stop": ["patience", "patience", "collapsed"],
        "valid_ndcg10_per_epoch": [[0.05, 0.07], [0.06, 0.08], []],
        "seconds": [1, 1, 1],
    },
    "scarcity": {
        "NoPT": {
            "0.1": point([0.05, 0.07], [0, 1]),
            "0.3": point([0.09, 0.1], [0, 1]),
            "1": point([0.12, 0.12], [0, 1]),
        },
        "HasPT": {
            "0.1": point([0.08, 0.09], [0, 1]),
            "0.3": point([], []),
            "1": point([0.13, 0.135], [0, 1]),
        },
    },
    "significance": [comparison(0.0021), comparison(0.31, -0.002, -0.015, a="IDRec", b="HasPT")],
    "stops": {
        "runs": 10,
        "patience": 8,
        "cap": 1,
        "collapsed": 1,
        "capped_runs": ["HasPT seed 1"],
        "epochs_cap": 40,
        "source_epochs_cap": 40,
        "patience_epochs": 3,
        "epochs_run": [],
    },
    "stage_seconds": {"source pre-training": 100.0, "target, all users": 200.0},
}


def test_the_main_table_shows_the_numbers_and_missing_cells_as_missing():
    table = main_table(SUMMARY)
    assert "Test users: all 100, new-item targets 12." in table
    assert "| Popularity | 1 | 0.1000 | 0.0500 | 0.0000 | 0.0000 | -58.3% |  |" in table
    nopt = "| NoPT | 3 | 0.2500 ± 0.0200 | 0.1200 ± 0.0040 | 0.1000 ± 0.0300 | 0.0500 ± 0.0100 |  |"
    assert f"{nopt} 4/7, 6/9, 5/8 |" in table
    assert "| HasPT | 2 | 0.2700 ± 0.0100 | 0.1320 ± 0.0030 | — | — | +10.0% | 4/7, 6/9 |" in table


def test_the_scarcity_table_and_an_empty_point():
    table = scarcity_table(SUMMARY)
    lines = table.splitlines()
    assert lines[0] == "| Method | 10% of users | 30% of users | 100% of users |"
    assert "| NoPT | 0.0600 ± 0.0010 | 0.0950 ± 0.0010 | 0.1200 ± 0.0010 |" in lines
    assert "| HasPT | 0.0850 ± 0.0010 | — | 0.1325 ± 0.0010 |" in lines
    assert "seeds [0, 1]" in table


def test_a_significant_difference_is_stated_with_its_interval_and_p_value():
    sentence = comparison_sentence(comparison(0.0021), SUMMARY["users"])
    assert sentence.startswith("HasPT beats NoPT by 10.0% NDCG@10 on all 100 test users (")
    assert "HasPT - NoPT = +0.0120 (+10.0%), 95% CI [+0.0040, +0.0200] or [+3.3%, +16.7%]" in sentence
    assert "p = 0.002" in sentence and "3 seed(s) x 100 users" in sentence
    worse = comparison_sentence(comparison(0.01, -0.012, -0.1, users="new", fraction=0.1), SUMMARY["users"])
    assert worse.startswith("HasPT trails NoPT by 10.0% NDCG@10 on the 12 new-item test users, trained on "
                            "10% of the target's users")  # fmt: skip


def test_no_significant_difference_is_said_as_such():
    sentence = comparison_sentence(comparison(0.31, -0.002, -0.015, a="IDRec", b="HasPT"), SUMMARY["users"])
    assert sentence.startswith("No significant difference at 5% between IDRec and HasPT in NDCG@10 on all")
    assert "IDRec - HasPT = -0.0020 (-1.5%)" in sentence and "p = 0.310" in sentence
    assert "beats" not in sentence and "trails" not in sentence
    # At exactly 5% the difference is not significant (p < 0.05 is).
    assert comparison_sentence(comparison(0.05), SUMMARY["users"]).startswith("No significant difference")


def test_no_relative_difference_against_a_mean_of_zero():
    zero = {**comparison(0.24, a="HasPT", b="IDRec", users="new"), "relative": None, "relative_ci_low": None}
    sentence = comparison_sentence(zero, SUMMARY["users"])
    assert "HasPT - IDRec = +0.0120, 95% CI [+0.0040, +0.0200], p = 0.240" in sentence


def test_p_values_at_the_bootstrap_floor():
    assert format_p(1 / 10001, 10000) == "p <= 0.0001"
    assert format_p(0.0004, 10000) == "p = 4.0e-04"


def test_conclusions_come_from_the_numbers():
    lines = conclusions(SUMMARY)
    assert lines[0].startswith("HasPT beats NoPT") and lines[1].startswith("No significant difference")
    new = next(line for line in lines if "new item" in line)
    assert "IDRec 0.0020" in new and "NoPT 0.0500" in new and "NoPT ranks them best" in new
    assert "HasPT" not in new  # its new-item cells are missing
    assert any(line.startswith("NoPT trained on 10% of the target's users reaches NDCG@10 0.0600, against "
                               "0.1200 with 100% (50% of it)") for line in lines)  # fmt: skip
    stops = lines[-1]
    assert stops.startswith("8 of 10 trained runs stopped by early stopping (patience 3 epochs on all users")
    assert "1 reached the epoch cap (40 on the target, 40 on the source)" in stops
    assert "1 collapsed" in stops and "HasPT seed 1" in stops


def test_results_files_from_a_results_json(tmp_path):
    saved = json.loads(json.dumps(SUMMARY))  # what results.json holds, read back
    saved["conclusions"] = conclusions(saved)
    files = write_results(saved, tmp_path / "out", {"title": "T", "date": "2026-12-02"}, tmp_path / "images")
    text = files["table"].read_text()
    assert "- date: 2026-12-02" in text and "- stage wall times (s): source pre-training 100" in text
    assert main_table(saved) in text and scarcity_table(saved) in text
    assert "own test NDCG@10: seed 0: 0.1100, seed 1: 0.1200, seed 2: —;" in text  # its source collapsed
    assert json.loads(files["json"].read_text())["methods"]["NoPT"]["mean"]["NDCG@10"] == pytest.approx(0.12)
    for kind in ("convergence", "scarcity"):
        assert files[kind].read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "images" / f"demo_{kind}.png").read_bytes() == files[kind].read_bytes()
    assert render(saved, {"title": "T"}).count("\n- ") >= len(saved["conclusions"])
