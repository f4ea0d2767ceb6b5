"""The demo's results table, JSON and plot from runs whose numbers are known."""

import json

import pytest

from transrec.demo.pipeline import MethodRun
from transrec.demo.report import markdown_table, summarise, write_results


def metrics(hr10, ndcg10):
    return {"HR@10": hr10, "NDCG@10": ndcg10, "HR@20": 2 * hr10, "NDCG@20": 2 * ndcg10}


RUNS = [
    MethodRun("NoPT", 0, metrics(0.2, 0.10), [0.05, 0.08], 10.0),
    MethodRun("NoPT", 1, metrics(0.4, 0.10), [0.07, 0.09, 0.1], 12.0),
    MethodRun("HasPT", 0, metrics(0.3, 0.12), [0.09, 0.11], 11.0),
    MethodRun("HasPT", 1, metrics(0.3, 0.14), [0.1, 0.12], 11.0),
]


def test_means_standard_deviations_and_the_improvement_by_hand():
    summary = summarise(RUNS)
    nopt, haspt = summary["methods"]["NoPT"], summary["methods"]["HasPT"]
    assert nopt["mean"]["HR@10"] == pytest.approx(0.3) and nopt["std"]["HR@10"] == pytest.approx(0.1)
    assert haspt["mean"]["NDCG@10"] == pytest.approx(0.13) and haspt["std"]["NDCG@10"] == pytest.approx(0.01)
    assert summary["haspt_over_nopt"]["NDCG@10"] == pytest.approx(0.3)  # (0.13 - 0.10) / 0.10
    assert summary["haspt_over_nopt"]["HR@10"] == pytest.approx(0.0)
    table = markdown_table(summary)
    assert "| NoPT | 2 | 0.3000 ± 0.1000 | 0.1000 ± 0.0000 |" in table
    assert "| HasPT | 2 | 0.3000 ± 0.0000 | 0.1300 ± 0.0100 |" in table and "| +30.0% |" in table
    assert table.splitlines()[-1].startswith("| Improv. HasPT over NoPT | | +0.0% | +30.0% |")


def test_results_files(tmp_path):
    files = write_results(summarise(RUNS), tmp_path, {"title": "T", "date": "2026-11-29"})
    assert "- date: 2026-11-29" in files["table"].read_text()
    saved = json.loads(files["json"].read_text())
    assert saved["context"]["title"] == "T"
    assert saved["methods"]["NoPT"]["valid_ndcg10_per_epoch"][1] == [0.07, 0.09, 0.1]
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"
